//! Failover of a real cluster: three `fjord broker` processes configured with nothing but Kafka's KRaft
//! property names in property files, as a user would write them. An idempotent acks=all producer (librdkafka)
//! writes numbered messages at a steady rate while the process leading partition 0 is killed with SIGKILL;
//! afterwards every acknowledged message must be in the log exactly once, at the offset it was acknowledged
//! with, in order per partition. The killed broker is then restarted from the same file and must rejoin every
//! ISR. `fjord cluster status` is checked along the way (fenced broker, offline partition, exit 5). A consumer in a
//! group reads throughout and must get every acknowledged message without stalling long.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{fjord, ok, stderr, temp_dir};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

const TOPIC: &str = "failover";
const PARTITIONS: i32 = 3;
const MESSAGES: u64 = 1500;
/// One message every this long: ~7.5 s of producing, the kill half-way.
const SEND_EVERY: Duration = Duration::from_millis(5);

/// A `fjord broker --config <file>` process.
struct Node {
    id: i32,
    config: PathBuf,
    log: PathBuf,
    bootstrap: String,
    child: Option<Child>,
    /// Receives the process's `fjord ready` line.
    ready_rx: Option<mpsc::Receiver<String>>,
}

impl Node {
    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_fjord"))
            .arg("broker")
            .arg("--config")
            .arg(&self.config)
            .env("FJORD_LOG", "info,openraft=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn fjord broker");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.starts_with("fjord ready") {
                    let _ = tx.send(line);
                }
            }
        });
        self.child = Some(child);
        self.ready_rx = Some(rx);
    }

    /// Waits (bounded) for the ready line of the process last spawned.
    fn await_ready(&mut self, limit: Duration) {
        let rx = self.ready_rx.take().expect("spawned");
        if rx.recv_timeout(limit).is_err() {
            panic!("broker {} was not ready within {limit:?}", self.id);
        }
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            eprintln!(
                "---- broker {} log (last 40 lines) ----\n{}",
                self.id,
                self.log_tail()
            );
        }
    }
}

/// The property file of node `id`: Kafka's KRaft names only.
fn write_properties(dir: &Path, id: i32, client: u16, controllers: &[u16]) -> PathBuf {
    let voters: Vec<String> = controllers
        .iter()
        .enumerate()
        .map(|(i, p)| format!("{}@127.0.0.1:{p}", i + 1))
        .collect();
    let text = format!(
        "# broker {id} of a three-node KRaft cluster (combined mode)\n\
         node.id={id}\n\
         process.roles=broker,controller\n\
         listeners=PLAINTEXT://127.0.0.1:{client},CONTROLLER://127.0.0.1:{controller}\n\
         advertised.listeners=PLAINTEXT://127.0.0.1:{client}\n\
         controller.listener.names=CONTROLLER\n\
         listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT\n\
         controller.quorum.voters={voters}\n\
         log.dirs={data}\n\
         broker.heartbeat.interval.ms=500\n\
         broker.session.timeout.ms=3000\n\
         replica.lag.time.max.ms=5000\n\
         offsets.topic.num.partitions=3\n",
        controller = controllers[(id - 1) as usize],
        voters = voters.join(","),
        data = dir.join(format!("broker-{id}")).display(),
    );
    let path = dir.join(format!("broker-{id}.properties"));
    std::fs::write(&path, text).unwrap();
    path
}

/// Deliveries the producer was told about: (message number, partition, offset) for each acknowledged one.
#[derive(Default)]
struct Acks {
    acked: Mutex<Vec<(u64, i32, i64)>>,
    failed: Mutex<Vec<(u64, String)>>,
}

/// The producer's context: shares [`Acks`] with the test.
struct AckContext(Arc<Acks>);

impl ClientContext for AckContext {}

impl ProducerContext for AckContext {
    type DeliveryOpaque = Box<u64>;
    fn delivery(&self, result: &DeliveryResult<'_>, n: Box<u64>) {
        match result {
            Ok(m) => self
                .0
                .acked
                .lock()
                .unwrap()
                .push((*n, m.partition(), m.offset())),
            Err((e, _)) => self.0.failed.lock().unwrap().push((*n, e.to_string())),
        }
    }
}

/// partition -> (leader, isr) from a fresh metadata request.
fn partitions(bootstrap: &str) -> BTreeMap<i32, (i32, Vec<i32>)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    let Ok(md) = consumer.fetch_metadata(Some(TOPIC), Duration::from_secs(5)) else {
        return BTreeMap::new();
    };
    md.topics()
        .iter()
        .flat_map(|t| t.partitions())
        .map(|p| (p.id(), (p.leader(), p.isr().to_vec())))
        .collect()
}

fn wait_for(limit: Duration, what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !ok() {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for: {what}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn status(bootstrap: &str) -> (Option<i32>, serde_json::Value) {
    let out = fjord(bootstrap, &["cluster", "status", "--output", "json"], None);
    let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            stderr(&out)
        )
    });
    (out.status.code(), v)
}

/// Three `fjord broker` processes, every one live, with `TOPIC` (3 partitions, RF=3, min.insync.replicas=2) in
/// sync on all three. Returns the nodes and a bootstrap list of all of them.
fn start_cluster(dir: &Path) -> (Vec<Node>, String) {
    let ports = fjord_meta::ports::free_ports("127.0.0.1", 6).unwrap();
    let (clients, controllers) = ports.split_at(3);
    let mut nodes: Vec<Node> = (1..=3)
        .map(|id| Node {
            id,
            config: write_properties(dir, id, clients[(id - 1) as usize], controllers),
            log: dir.join(format!("broker-{id}.log")),
            bootstrap: format!("127.0.0.1:{}", clients[(id - 1) as usize]),
            child: None,
            ready_rx: None,
        })
        .collect();
    // All at once: each waits for a quorum of the others.
    for n in &mut nodes {
        n.spawn();
    }
    for n in &mut nodes {
        n.await_ready(Duration::from_secs(90));
    }
    let bootstrap = nodes
        .iter()
        .map(|n| n.bootstrap.clone())
        .collect::<Vec<_>>()
        .join(",");

    // Each broker is ready once it is unfenced itself; placement needs all three live in the view of the
    // broker that creates the topic.
    wait_for(Duration::from_secs(30), "three live brokers", || {
        let (_, s) = status(&bootstrap);
        s["brokers"]
            .as_array()
            .is_some_and(|b| b.iter().filter(|b| b["state"] == "live").count() == 3)
    });
    ok(&fjord(
        &bootstrap,
        &[
            "topics",
            "create",
            TOPIC,
            "--partitions",
            "3",
            "--replication-factor",
            "3",
            "--config",
            "min.insync.replicas=2",
        ],
        None,
    ));
    wait_for(
        Duration::from_secs(30),
        "every replica in every ISR",
        || {
            let p = partitions(&bootstrap);
            p.len() == PARTITIONS as usize && p.values().all(|(_, isr)| isr.len() == 3)
        },
    );
    (nodes, bootstrap)
}

fn idempotent_producer(bootstrap: &str, acks: &Arc<Acks>) -> BaseProducer<AckContext> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "60000")
        .set("request.timeout.ms", "10000")
        .set("retry.backoff.ms", "100")
        .set("topic.metadata.refresh.interval.ms", "1000")
        .create_with_context(AckContext(acks.clone()))
        .expect("an idempotent producer")
}

/// Queues messages `range` ("m-<n>", partition n mod 3), one every [`SEND_EVERY`], calling `before(n)` first.
fn send(
    producer: &BaseProducer<AckContext>,
    range: std::ops::Range<u64>,
    mut before: impl FnMut(u64),
) {
    let started = Instant::now();
    let first = range.start;
    for n in range {
        before(n);
        let partition = (n % PARTITIONS as u64) as i32;
        let payload = format!("m-{n}");
        let mut record = BaseRecord::<(), str, Box<u64>>::with_opaque_to(TOPIC, Box::new(n))
            .payload(payload.as_str())
            .partition(partition);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((e, r)) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) => {
                    producer.poll(Duration::from_millis(5));
                    record = r;
                }
                Err((e, _)) => panic!("message {n} could not be queued: {e}"),
            }
        }
        producer.poll(Duration::ZERO);
        let due = started + SEND_EVERY * ((n - first) as u32 + 1);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
}

/// A librdkafka consumer in a group (auto-committing, from the earliest offset) reading the topic on its own
/// thread while the faults happen: which message numbers it saw, and the longest time it went without a message
/// while the producer was still sending (its group coordinator may be on the broker that dies).
struct GroupReader {
    seen: Arc<Mutex<BTreeSet<u64>>>,
    longest_gap: Arc<Mutex<Duration>>,
    producing: Arc<std::sync::atomic::AtomicBool>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl GroupReader {
    fn start(bootstrap: &str) -> GroupReader {
        use std::sync::atomic::{AtomicBool, Ordering};
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("group.id", "failover-readers")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false")
            .create()
            .expect("consumer");
        consumer.subscribe(&[TOPIC]).expect("subscribe");
        let seen = Arc::new(Mutex::new(BTreeSet::new()));
        let longest_gap = Arc::new(Mutex::new(Duration::ZERO));
        let producing = Arc::new(AtomicBool::new(true));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, g, p, st) = (
            seen.clone(),
            longest_gap.clone(),
            producing.clone(),
            stop.clone(),
        );
        let thread = std::thread::spawn(move || {
            let mut last = Instant::now();
            while !st.load(Ordering::Acquire) {
                if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
                    let n = m
                        .payload_view::<str>()
                        .and_then(Result::ok)
                        .and_then(|v| v.strip_prefix("m-"))
                        .and_then(|v| v.parse().ok());
                    if let Some(n) = n {
                        s.lock().unwrap().insert(n);
                    }
                    last = Instant::now();
                } else if p.load(Ordering::Acquire) {
                    let mut gap = g.lock().unwrap();
                    *gap = (*gap).max(last.elapsed());
                }
            }
        });
        GroupReader {
            seen,
            longest_gap,
            producing,
            stop,
            thread: Some(thread),
        }
    }

    /// After the producer is done: waits (bounded) until every acknowledged message was read, then stops.
    fn finish(mut self, acked: &BTreeSet<u64>) -> Duration {
        use std::sync::atomic::Ordering;
        self.producing.store(false, Ordering::Release);
        wait_for(
            Duration::from_secs(60),
            "the group consumer read every acknowledged message",
            || acked.is_subset(&self.seen.lock().unwrap()),
        );
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            t.join().expect("reader thread");
        }
        let gap = *self.longest_gap.lock().unwrap();
        gap
    }
}

/// Flushes, then asserts that nearly everything was acknowledged (two of three brokers are a majority and
/// min.insync.replicas=2 holds). Returns what was acknowledged: (message, partition, offset).
fn flush_and_check_acks(producer: &BaseProducer<AckContext>, acks: &Acks) -> Vec<(u64, i32, i64)> {
    producer
        .flush(Duration::from_secs(90))
        .expect("every message delivered or failed within 90 s");
    let acked = acks.acked.lock().unwrap().clone();
    let failed = acks.failed.lock().unwrap().clone();
    eprintln!(
        "{} messages acknowledged, {} failed ({:?}...)",
        acked.len(),
        failed.len(),
        failed.iter().take(3).collect::<Vec<_>>()
    );
    assert!(
        acked.len() as u64 >= MESSAGES * 9 / 10,
        "only {} of {MESSAGES} acknowledged; failures: {:?}",
        acked.len(),
        failed.iter().take(10).collect::<Vec<_>>()
    );
    acked
}

/// Reads every partition from the beginning up to its high watermark and checks that each message is at most
/// once in the topic, in order per partition, and each acknowledged one exactly where it was acknowledged.
/// Returns the number of messages in the log.
fn check_log(bootstrap: &str, acked: &[(u64, i32, i64)]) -> usize {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "failover-check")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    let mut high = BTreeMap::new();
    for p in 0..PARTITIONS {
        let (_, h) = consumer
            .fetch_watermarks(TOPIC, p, Duration::from_secs(10))
            .unwrap();
        high.insert(p, h);
        tpl.add_partition_offset(TOPIC, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut log: BTreeMap<i32, Vec<(i64, u64)>> = BTreeMap::new();
    let mut consumer_errors: Vec<String> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while (0..PARTITIONS)
        .any(|p| log.get(&p).and_then(|v| v.last()).map_or(0, |(o, _)| o + 1) < high[&p])
    {
        assert!(
            Instant::now() < deadline,
            "could not read up to the high watermarks {high:?}; errors: {consumer_errors:?}"
        );
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                let text = std::str::from_utf8(m.payload().unwrap()).unwrap();
                let n: u64 = text.strip_prefix("m-").unwrap().parse().unwrap();
                log.entry(m.partition()).or_default().push((m.offset(), n));
            }
            // librdkafka reports the killed broker's refused connections here; they are not about the data.
            Some(Err(e)) if consumer_errors.len() < 5 => consumer_errors.push(e.to_string()),
            Some(Err(_)) => {}
            None => {}
        }
    }
    if !consumer_errors.is_empty() {
        eprintln!("consumer errors on the way (reading went on): {consumer_errors:?}");
    }

    // Each message at most once in the whole topic; each acknowledged one exactly once, at its offset.
    let mut seen: BTreeMap<u64, (i32, i64)> = BTreeMap::new();
    for (p, records) in &log {
        for (offset, n) in records {
            assert_eq!(
                (*n % PARTITIONS as u64) as i32,
                *p,
                "message {n} in partition {p}"
            );
            if let Some(first) = seen.insert(*n, (*p, *offset)) {
                panic!("message {n} is in the log twice: at {first:?} and at ({p}, {offset})");
            }
        }
        // In order per partition: numbers increase with offsets.
        assert!(
            records.windows(2).all(|w| w[0].1 < w[1].1),
            "partition {p} is out of order"
        );
    }
    for (n, p, offset) in acked {
        assert_eq!(
            seen.get(n),
            Some(&(*p, *offset)),
            "acknowledged message {n} (partition {p}, offset {offset}) is not where it was acknowledged"
        );
    }
    seen.len()
}

#[test]
fn acknowledged_messages_survive_kill_9_of_a_leader_and_the_broker_rejoins_every_isr() {
    let dir = temp_dir();
    let (mut nodes, bootstrap) = start_cluster(dir.path());
    // And a topic without copies, one partition per broker: the killed broker's goes offline.
    ok(&fjord(
        &bootstrap,
        &[
            "topics",
            "create",
            "solo",
            "--partitions",
            "3",
            "--replication-factor",
            "1",
        ],
        None,
    ));

    let acks = Arc::new(Acks::default());
    let producer = idempotent_producer(&bootstrap, &acks);
    let reader = GroupReader::start(&bootstrap);
    let victim = partitions(&bootstrap)[&0].0;
    assert!((1..=3).contains(&victim), "partition 0 has a leader");
    send(&producer, 0..MESSAGES, |n| {
        if n == MESSAGES / 2 {
            eprintln!("kill -9 broker {victim}, the leader of partition 0, after {n} messages");
            nodes[(victim - 1) as usize].kill9();
        }
    });
    let acked = flush_and_check_acks(&producer, &acks);
    // The group's consumer kept going through the failover and read everything acknowledged.
    let gap = reader.finish(&acked.iter().map(|(n, _, _)| *n).collect());
    println!(
        "the group consumer went at most {:.1} s without a message",
        gap.as_secs_f64()
    );
    assert!(
        gap < Duration::from_secs(20),
        "the group consumer stalled {gap:?} during the failover"
    );
    let leader_after = partitions(&bootstrap)[&0].0;
    assert_ne!(
        leader_after, victim,
        "partition 0 moved away from the killed broker"
    );
    // `fjord topics describe` shows the new leader with a newer leader epoch.
    let described: serde_json::Value = serde_json::from_str(&ok(&fjord(
        &bootstrap,
        &["topics", "describe", TOPIC, "--output", "json"],
        None,
    )))
    .unwrap();
    let p0 = &described[0]["partitions"][0];
    assert_eq!(p0["leader"], leader_after, "{p0}");
    assert!(p0["leader_epoch"].as_i64().unwrap_or(-1) >= 1, "{p0}");
    let in_log = check_log(&bootstrap, &acked);
    let acked_numbers: BTreeSet<u64> = acked.iter().map(|(n, _, _)| *n).collect();
    println!(
        "checked {} acknowledged records ({in_log} in the log, {} of {MESSAGES} sent not acknowledged); \
         partition 0 moved from broker {victim} to {leader_after}",
        acked_numbers.len(),
        MESSAGES as usize - acked_numbers.len()
    );

    // The cluster as `fjord cluster status` sees it: the killed broker fenced once its session expired, the
    // partitions it replicated under-replicated, its unreplicated one offline (exit 5).
    let survivors = nodes
        .iter()
        .filter(|n| n.id != victim)
        .map(|n| n.bootstrap.clone())
        .collect::<Vec<_>>()
        .join(",");
    let mut last = serde_json::Value::Null;
    wait_for(
        Duration::from_secs(30),
        "status: victim fenced, a partition offline",
        || {
            let (code, s) = status(&survivors);
            let fenced = s["brokers"].as_array().is_some_and(|b| {
                b.iter()
                    .any(|b| b["id"] == victim && b["state"] == "fenced")
            });
            let offline = s["partitions"]["offline"]
                .as_array()
                .is_some_and(|o| o.iter().any(|p| p["topic"] == "solo"));
            let under = s["partitions"]["under_replicated"]
                .as_array()
                .is_some_and(|u| u.iter().filter(|p| p["topic"] == TOPIC).count() == 3);
            let done = code == Some(5) && fenced && offline && under && s["healthy"] == false;
            last = s;
            done
        },
    );
    assert_eq!(
        last["quorum"]["voters"].as_array().unwrap().len(),
        3,
        "{last}"
    );

    // Restart the killed broker from the same file: it catches up and rejoins every ISR.
    let node = &mut nodes[(victim - 1) as usize];
    node.spawn();
    node.await_ready(Duration::from_secs(60));
    let rejoined = Instant::now();
    wait_for(
        Duration::from_secs(60),
        "the restarted broker in every ISR",
        || {
            let p = partitions(&bootstrap);
            p.len() == PARTITIONS as usize && p.values().all(|(_, isr)| isr.contains(&victim))
        },
    );
    println!(
        "broker {victim} rejoined every ISR {:.1} s after it was ready",
        rejoined.elapsed().as_secs_f64()
    );
    wait_for(Duration::from_secs(30), "a healthy cluster status", || {
        let (code, s) = status(&bootstrap);
        code == Some(0) && s["healthy"] == true
    });
}

fn signal(node: &Node, sig: &str) {
    let pid = node.child.as_ref().expect("running").id();
    let status = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill {sig} {pid}");
}

/// SIGSTOP of the process leading partition 0 while an idempotent acks=all producer writes: the frozen broker's
/// session expires, it is fenced and loses its leaderships, writes go on at the new leaders; after SIGCONT it
/// resumes with stale state (requests buffered in its sockets, its old view of the metadata), learns the new
/// epochs, follows, truncates anything it appended alone, and rejoins every ISR. No acknowledged message is lost
/// or duplicated and nothing unacknowledged it appended is ever read.
#[test]
fn a_sigstopped_leader_is_fenced_and_after_sigcont_rejoins_without_divergent_data() {
    let dir = temp_dir();
    let (nodes, bootstrap) = start_cluster(dir.path());
    let acks = Arc::new(Acks::default());
    let producer = idempotent_producer(&bootstrap, &acks);
    let victim = partitions(&bootstrap)[&0].0;
    assert!((1..=3).contains(&victim), "partition 0 has a leader");
    let node = &nodes[(victim - 1) as usize];
    let survivors = nodes
        .iter()
        .filter(|n| n.id != victim)
        .map(|n| n.bootstrap.clone())
        .collect::<Vec<_>>()
        .join(",");
    let stopped_at = std::cell::Cell::new(None);
    send(&producer, 0..MESSAGES, |n| {
        if n == MESSAGES / 3 {
            eprintln!("SIGSTOP broker {victim}, the leader of partition 0, after {n} messages");
            signal(node, "-STOP");
            stopped_at.set(Some(Instant::now()));
        }
    });
    // Fenced while frozen: the survivors moved every leadership and ISR membership away from it.
    wait_for(
        Duration::from_secs(30),
        "the stopped broker leads nothing and is in no ISR",
        || {
            let p = partitions(&survivors);
            p.len() == PARTITIONS as usize
                && p.values()
                    .all(|(l, isr)| *l != victim && *l > 0 && !isr.contains(&victim))
        },
    );
    // Writes went on without it.
    let acked = flush_and_check_acks(&producer, &acks);
    eprintln!(
        "SIGCONT broker {victim} after {:?} stopped",
        stopped_at.get().unwrap().elapsed()
    );
    signal(node, "-CONT");
    wait_for(
        Duration::from_secs(60),
        "the resumed broker in every ISR again",
        || {
            let p = partitions(&bootstrap);
            p.len() == PARTITIONS as usize
                && p.values().all(|(l, isr)| *l != victim && isr.len() == 3)
        },
    );
    let in_log = check_log(&bootstrap, &acked);
    println!(
        "checked {} acknowledged records ({in_log} in the log) after SIGSTOP/SIGCONT of broker {victim}",
        acked.len()
    );
    drop(producer);
}
