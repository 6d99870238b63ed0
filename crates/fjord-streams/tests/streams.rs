//! The streams library against a real Fjord broker (in this process, on a free port, data in a temp dir) with
//! librdkafka producers and consumers: word count through a repartition topic, per-key tumbling, hopping
//! (suppressed: final results only) and session counts of a generated clickstream with out-of-order and late
//! records compared with a reference computed here, kill -9 of a processing process mid-stream and restart,
//! and two processes in one group of which one is killed.
//!
//! Processing processes are this test binary again (`child_process_entry_point`, selected by an environment
//! variable), so that kill -9 hits a real process.

use std::collections::{BTreeMap, HashMap};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use fjord_streams::{
    decode_count, KafkaStreams, ProcessingGuarantee, Record, SessionWindows, StateStores,
    StreamsBuilder, StreamsConfig, Suppressed, TimeWindows, Topology, WindowedKey,
};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Message, Offset, TopicPartitionList};

/// Every wait in these tests ends by this deadline.
const WAIT: Duration = Duration::from_secs(90);

struct Cluster {
    rt: tokio::runtime::Runtime,
    broker: Option<fjord_broker::Broker>,
    bootstrap: String,
    _dir: tempfile::TempDir,
}

impl Cluster {
    fn start() -> Cluster {
        Cluster::start_with(&[])
    }

    /// A broker with further broker properties.
    fn start_with(extra: &[(&str, &str)]) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let mut props = BTreeMap::new();
        for (k, v) in [
            ("listeners", "PLAINTEXT://127.0.0.1:0".to_string()),
            ("log.dirs", dir.path().display().to_string()),
            ("offsets.topic.num.partitions", "2".into()),
            ("transaction.state.log.num.partitions", "2".into()),
            ("group.initial.rebalance.delay.ms", "0".into()),
        ] {
            props.insert(k.to_string(), v);
        }
        for (k, v) in extra {
            props.insert(k.to_string(), v.to_string());
        }
        let cfg = fjord_broker::config::BrokerConfig::from_properties(props).unwrap();
        let broker = rt.block_on(fjord_broker::Broker::start(cfg)).unwrap();
        let bootstrap = broker.local_addr().to_string();
        Cluster {
            rt,
            broker: Some(broker),
            bootstrap,
            _dir: dir,
        }
    }

    fn create_topic(&self, name: &str, partitions: i32) {
        self.create_topic_with(name, partitions, &[]);
    }

    fn create_topic_with(&self, name: &str, partitions: i32, configs: &[(&str, &str)]) {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .create()
            .unwrap();
        let mut t = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
        for (k, v) in configs {
            t = t.set(k, v);
        }
        let r = self
            .rt
            .block_on(admin.create_topics([&t], &AdminOptions::new()))
            .unwrap();
        assert!(r[0].is_ok(), "create {name}: {r:?}");
    }

    /// Writes (partition, key, value, timestamp) records in order and waits for every acknowledgement.
    fn produce(&self, topic: &str, records: &[(i32, String, String, i64)]) {
        let p: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .create()
            .unwrap();
        for (part, k, v, ts) in records {
            let mut rec = BaseRecord::to(topic)
                .partition(*part)
                .key(k.as_bytes())
                .payload(v.as_bytes())
                .timestamp(*ts);
            loop {
                match p.send(rec) {
                    Ok(()) => break,
                    Err((_, r)) => {
                        p.poll(Duration::from_millis(10));
                        rec = r;
                    }
                }
            }
        }
        p.flush(Duration::from_secs(30)).unwrap();
    }

    fn config(&self, app: &str, state_dir: &std::path::Path) -> StreamsConfig {
        let mut c = StreamsConfig::new(app, &self.bootstrap);
        c.commit_interval = Duration::from_millis(200);
        c.state_dir = state_dir.to_path_buf();
        c.session_timeout = Duration::from_secs(6);
        c
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(b) = self.broker.take() {
            let _ = self.rt.block_on(b.shutdown());
        }
    }
}

/// A record as read: partition, key, value.
type PartKv = (i32, Option<Bytes>, Option<Bytes>);

/// Every record of `topic` up to its current end, in offset order per partition, read_committed.
fn read_all(bootstrap: &str, topic: &str) -> Vec<(Option<Bytes>, Option<Bytes>)> {
    read_topic(bootstrap, topic, true)
        .into_iter()
        .map(|(_, k, v)| (k, v))
        .collect()
}

/// Every record of `topic` up to its current end (the high watermark) as (partition, key, value), in offset
/// order per partition; `read_committed` or read_uncommitted (records of open transactions too).
fn read_topic(bootstrap: &str, topic: &str, read_committed: bool) -> Vec<PartKv> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "test-reader")
        .set("enable.auto.commit", "false")
        // The end of a partition: its high watermark, or read_committed its last stable offset (an open
        // transaction's records are not waited for).
        .set("enable.partition.eof", "true")
        .set(
            "isolation.level",
            if read_committed {
                "read_committed"
            } else {
                "read_uncommitted"
            },
        )
        .create()
        .unwrap();
    let md = c
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let parts: Vec<i32> = md.topics()[0].partitions().iter().map(|p| p.id()).collect();
    let mut ends = HashMap::new();
    let mut tpl = TopicPartitionList::new();
    for p in parts {
        let (_, high) = c
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .unwrap();
        if high > 0 {
            ends.insert(p, high);
            tpl.add_partition_offset(topic, p, Offset::Beginning)
                .unwrap();
        }
    }
    let mut out: BTreeMap<i32, Vec<PartKv>> = BTreeMap::new();
    if ends.is_empty() {
        return Vec::new();
    }
    c.assign(&tpl).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ends.is_empty() && Instant::now() < deadline {
        match c.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                out.entry(m.partition()).or_default().push((
                    m.partition(),
                    m.key().map(Bytes::copy_from_slice),
                    m.payload().map(Bytes::copy_from_slice),
                ));
                if ends
                    .get(&m.partition())
                    .is_some_and(|e| m.offset() + 1 >= *e)
                {
                    ends.remove(&m.partition());
                }
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                ends.remove(&p);
            }
            Some(Err(e)) => panic!("reading {topic}: {e}"),
            None => {
                // Transaction markers at the end are never delivered: the position tells.
                for el in c.position().unwrap().elements() {
                    if let Offset::Offset(o) = el.offset() {
                        if ends.get(&el.partition()).is_some_and(|e| o >= *e) {
                            ends.remove(&el.partition());
                        }
                    }
                }
            }
        }
    }
    out.into_values().flatten().collect()
}

/// The latest value per key (tombstones remove), counts decoded.
fn table(records: &[(Option<Bytes>, Option<Bytes>)]) -> BTreeMap<Vec<u8>, i64> {
    let mut t = BTreeMap::new();
    for (k, v) in records {
        let k = k.clone().unwrap_or_default().to_vec();
        match v {
            Some(v) => {
                t.insert(k, decode_count(v).expect("8-byte count"));
            }
            None => {
                t.remove(&k);
            }
        }
    }
    t
}

/// Waits until the table materialized from `topic` equals `want`; fails with the difference.
fn await_table(bootstrap: &str, topic: &str, want: &BTreeMap<Vec<u8>, i64>, what: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        let got = table(&read_all(bootstrap, topic));
        if &got == want {
            return;
        }
        if Instant::now() > deadline {
            let missing: Vec<_> = want
                .iter()
                .filter(|(k, v)| got.get(*k) != Some(v))
                .take(10)
                .collect();
            let extra: Vec<_> = got
                .iter()
                .filter(|(k, v)| want.get(*k) != Some(v))
                .take(10)
                .collect();
            panic!(
                "{what}: {topic} has {} keys, the reference {}; wrong or missing (want): {missing:?}; wrong or extra (got): {extra:?}",
                got.len(),
                want.len()
            );
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn await_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn wkey(user: &str, start: i64, end: i64) -> Vec<u8> {
    let mut k = user.as_bytes().to_vec();
    k.extend_from_slice(&start.to_be_bytes());
    k.extend_from_slice(&end.to_be_bytes());
    k
}

// ---------------------------------------------------------------- word count

#[test]
fn word_count_through_a_repartition_topic_equals_the_reference() {
    let c = Cluster::start();
    c.create_topic("lines", 2);
    c.create_topic("word-counts", 2);
    let words = ["fjord", "kafka", "stream", "table", "window", "late"];
    let mut lines = Vec::new();
    let mut want: BTreeMap<Vec<u8>, i64> = BTreeMap::new();
    let mut rng = Rng(7);
    for i in 0..400 {
        let n = 1 + rng.next() % 5;
        let line: Vec<&str> = (0..n).map(|_| words[(rng.next() % 6) as usize]).collect();
        for w in &line {
            *want.entry(w.as_bytes().to_vec()).or_default() += 1;
        }
        lines.push((i % 2, format!("line-{i}"), line.join(" "), 1_000 + i as i64));
    }
    c.produce("lines", &lines);

    let b = StreamsBuilder::new();
    b.stream("lines")
        .flat_map(|r: Record| {
            let text = String::from_utf8_lossy(r.value_bytes()).into_owned();
            text.split_whitespace()
                .map(|w| Record::new(Bytes::new(), w.to_string(), r.timestamp))
                .collect::<Vec<_>>()
        })
        .group_by("words", |r| r.value.clone().unwrap_or_default())
        .count("word-counts-store")
        .to("word-counts");
    let dir = tempfile::tempdir().unwrap();
    let app = KafkaStreams::start(b.build().unwrap(), c.config("wordcount", dir.path())).unwrap();
    await_table(&c.bootstrap, "word-counts", &want, "word count");
    let m = app.metrics();
    assert_eq!(
        m.records_processed as usize,
        400 + want.values().sum::<i64>() as usize
    );
    app.close().unwrap();

    // The internal topics follow Kafka Streams' names.
    let changelog = read_all(&c.bootstrap, "wordcount-word-counts-store-changelog");
    assert!(!changelog.is_empty(), "the store's changelog is written");
    assert_eq!(
        read_all(&c.bootstrap, "wordcount-words-repartition").len() as i64,
        want.values().sum::<i64>()
    );
}

#[test]
fn a_missing_source_topic_and_mismatched_partitions_are_clear_errors() {
    let c = Cluster::start();
    let b = StreamsBuilder::new();
    b.stream("nope").to("out");
    let dir = tempfile::tempdir().unwrap();
    let e = KafkaStreams::start(b.build().unwrap(), c.config("missing", dir.path()))
        .err()
        .expect("a missing topic is refused")
        .to_string();
    assert!(e.contains("`nope` does not exist"), "{e}");

    c.create_topic("left", 2);
    c.create_topic("right", 3);
    let b = StreamsBuilder::new();
    b.stream("left")
        .merge(&b.stream("right"))
        .group_by_key()
        .count("merged");
    let e = KafkaStreams::start(b.build().unwrap(), c.config("copart", dir.path()))
        .err()
        .expect("unequal partition counts under one store are refused")
        .to_string();
    assert!(
        e.contains("co-partitioning") && e.contains("left has 2") && e.contains("right has 3"),
        "{e}"
    );
}

#[test]
fn stateless_steps_filter_map_branch_and_merge() {
    let c = Cluster::start();
    c.create_topic("events", 1);
    for t in ["evens", "odds", "both"] {
        c.create_topic(t, 1);
    }
    let recs: Vec<_> = (0..100)
        .map(|i| (0, format!("k{i}"), i.to_string(), 5_000 + i as i64))
        .collect();
    c.produce("events", &recs);
    let b = StreamsBuilder::new();
    let n = |r: &Record| {
        String::from_utf8_lossy(r.value_bytes())
            .parse::<i64>()
            .unwrap()
    };
    let s = b
        .stream("events")
        .filter(move |r| n(r) < 90)
        .map_values(move |r| Some(Bytes::from((n(r) * 10).to_string())));
    let parts = s.branch(vec![
        Box::new(move |r: &Record| n(r) % 20 == 0),
        Box::new(|_: &Record| true),
    ]);
    parts[0].to("evens");
    parts[1].to("odds");
    parts[0].merge(&parts[1]).to("both");
    let dir = tempfile::tempdir().unwrap();
    let app = KafkaStreams::start(b.build().unwrap(), c.config("stateless", dir.path())).unwrap();
    await_until("all 90 records in `both`", || {
        read_all(&c.bootstrap, "both").len() >= 90
    });
    app.close().unwrap();
    let vals = |t| {
        read_all(&c.bootstrap, t)
            .into_iter()
            .map(|(_, v)| {
                String::from_utf8(v.unwrap().to_vec())
                    .unwrap()
                    .parse::<i64>()
                    .unwrap()
            })
            .collect::<Vec<_>>()
    };
    let evens = vals("evens");
    assert_eq!(
        evens,
        (0..90)
            .filter(|i| (i * 10) % 20 == 0)
            .map(|i| i * 10)
            .collect::<Vec<_>>()
    );
    let odds = vals("odds");
    assert_eq!(odds.len(), 90 - evens.len());
    let mut both = vals("both");
    both.sort();
    assert_eq!(both, (0..90).map(|i| i * 10).collect::<Vec<_>>());
}

// ---------------------------------------------------------------- clickstream

const TUMBLE: i64 = 10_000;
const HOP_SIZE: i64 = 10_000;
const HOP_ADVANCE: i64 = 5_000;
const GRACE: i64 = 4_000;
const GAP: i64 = 3_000;
const SESSION_GRACE: i64 = 2_000;
const BASE: i64 = 1_700_000_000_000;

/// A small deterministic generator (xorshift); the seed is printed by the tests that use it.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Clicks (partition, user, page, timestamp) with out-of-order jitter, some records far behind, and every 200
/// records a group placed exactly on the lateness boundaries (a window closing exactly at stream time, a
/// session ending exactly grace before it).
fn clickstream(
    seed: u64,
    n: usize,
    users: u64,
    partitions: i32,
) -> Vec<(i32, String, String, i64)> {
    let mut rng = Rng(seed.max(1));
    let mut max = vec![i64::MIN; partitions as usize];
    let mut out = Vec::with_capacity(n + n / 40);
    for i in 0..n {
        let u = rng.next() % users;
        let p = (u % partitions as u64) as i32;
        let user = format!("user-{u}");
        let mut ts = BASE + i as i64 * 50 - (rng.next() % 2_500) as i64;
        if rng.next().is_multiple_of(25) {
            ts -= 5_000 + (rng.next() % 15_000) as i64;
        }
        let push = |ts: i64, out: &mut Vec<_>, max: &mut Vec<i64>| {
            max[p as usize] = max[p as usize].max(ts);
            out.push((p, user.clone(), format!("/page/{}", i % 7), ts));
        };
        push(ts, &mut out, &mut max);
        if i % 200 == 199 {
            let m = max[p as usize];
            let x = (m - GRACE + TUMBLE - 1).div_euclid(TUMBLE);
            let now = x * TUMBLE + GRACE;
            push(now, &mut out, &mut max); // stream time becomes exactly end + grace of window [(x-1)T, xT)
            push(x * TUMBLE - 1, &mut out, &mut max); // in that window: closed, dropped
            push(x * TUMBLE, &mut out, &mut max); // next window: open
            push(now - SESSION_GRACE, &mut out, &mut max); // a session ending exactly grace before: kept
            push(now - SESSION_GRACE - GAP - 1, &mut out, &mut max); // beyond grace and not joining it: dropped
        }
    }
    out
}

/// The expected results, computed per partition in production order from the documented rules (written out
/// here, not taken from the library).
struct Reference {
    tumbling: BTreeMap<Vec<u8>, i64>,
    hopping_final: BTreeMap<Vec<u8>, i64>,
    sessions: BTreeMap<Vec<u8>, i64>,
    per_key: BTreeMap<Vec<u8>, i64>,
    late_dropped: u64,
}

fn reference(clicks: &[(i32, String, String, i64)], partitions: i32) -> Reference {
    let mut r = Reference {
        tumbling: BTreeMap::new(),
        hopping_final: BTreeMap::new(),
        sessions: BTreeMap::new(),
        per_key: BTreeMap::new(),
        late_dropped: 0,
    };
    for p in 0..partitions {
        let mut stream_time = i64::MIN;
        let mut hopping: BTreeMap<(String, i64), i64> = BTreeMap::new();
        // user -> sessions [first, last] with counts
        let mut sessions: HashMap<String, Vec<(i64, i64, i64)>> = HashMap::new();
        for (_, user, _, ts) in clicks.iter().filter(|c| c.0 == p) {
            let ts = *ts;
            stream_time = stream_time.max(ts);
            *r.per_key.entry(user.as_bytes().to_vec()).or_default() += 1;
            // tumbling
            let start = ts - ts % TUMBLE;
            if start + TUMBLE + GRACE > stream_time {
                *r.tumbling
                    .entry(wkey(user, start, start + TUMBLE))
                    .or_default() += 1;
            } else {
                r.late_dropped += 1;
            }
            // hopping
            let mut any = false;
            let mut s = ts - ts % HOP_ADVANCE;
            while s > ts - HOP_SIZE {
                if s + HOP_SIZE + GRACE > stream_time {
                    *hopping.entry((user.clone(), s)).or_default() += 1;
                    any = true;
                }
                s -= HOP_ADVANCE;
            }
            if !any {
                r.late_dropped += 1;
            }
            // sessions
            let list = sessions.entry(user.clone()).or_default();
            let (over, mut rest): (Vec<(i64, i64, i64)>, Vec<_>) = list
                .iter()
                .copied()
                .partition(|(a, b, _)| a - GAP <= ts && ts <= b + GAP);
            let first = over.iter().map(|x| x.0).chain([ts]).min().unwrap();
            let last = over.iter().map(|x| x.1).chain([ts]).max().unwrap();
            if last + SESSION_GRACE >= stream_time {
                rest.push((first, last, over.iter().map(|x| x.2).sum::<i64>() + 1));
                *list = rest;
            } else {
                r.late_dropped += 1;
            }
        }
        for ((user, s), n) in hopping {
            if s + HOP_SIZE + GRACE <= stream_time {
                r.hopping_final.insert(wkey(&user, s, s + HOP_SIZE), n);
            }
        }
        for (user, list) in sessions {
            for (a, b, n) in list {
                r.sessions.insert(wkey(&user, a, b), n);
            }
        }
    }
    r
}

fn click_topology() -> Topology {
    let b = StreamsBuilder::new();
    let clicks = b.stream("clicks");
    let by_user = clicks.group_by_key();
    by_user.count("per-user").to("per-user-counts");
    by_user
        .windowed_by(
            TimeWindows::tumbling(Duration::from_millis(TUMBLE as u64))
                .grace(Duration::from_millis(GRACE as u64)),
        )
        .count("tumbling")
        .to("tumbling-counts");
    by_user
        .windowed_by(
            TimeWindows::hopping(
                Duration::from_millis(HOP_SIZE as u64),
                Duration::from_millis(HOP_ADVANCE as u64),
            )
            .grace(Duration::from_millis(GRACE as u64)),
        )
        .count("hopping")
        .suppress(Suppressed::UntilWindowCloses)
        .to("hopping-final");
    by_user
        .windowed_by(
            SessionWindows::with_inactivity_gap(Duration::from_millis(GAP as u64))
                .grace(Duration::from_millis(SESSION_GRACE as u64)),
        )
        .count("sessions")
        .to("session-counts");
    b.build().unwrap()
}

fn click_topics(c: &Cluster, partitions: i32) {
    for t in [
        "clicks",
        "per-user-counts",
        "tumbling-counts",
        "hopping-final",
        "session-counts",
    ] {
        c.create_topic(t, partitions);
    }
}

/// Checks every output of the click topology against the reference.
fn check_click_outputs(c: &Cluster, want: &Reference, what: &str) {
    await_table(&c.bootstrap, "per-user-counts", &want.per_key, what);
    await_table(&c.bootstrap, "tumbling-counts", &want.tumbling, what);
    await_table(&c.bootstrap, "session-counts", &want.sessions, what);
    await_table(&c.bootstrap, "hopping-final", &want.hopping_final, what);
}

#[test]
fn windowed_counts_of_a_clickstream_with_late_records_equal_the_reference() {
    let seed = 0x5eed_0001;
    let partitions = 2;
    let clicks = clickstream(seed, 3_000, 40, partitions);
    let want = reference(&clicks, partitions);
    assert!(
        want.late_dropped > 0 && !want.hopping_final.is_empty(),
        "the input exercises lateness"
    );
    let c = Cluster::start();
    click_topics(&c, partitions);
    c.produce("clicks", &clicks);
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = c.config("clicks", dir.path());
    cfg.state_stores = StateStores::Fjall;
    let app = KafkaStreams::start(click_topology(), cfg).unwrap();
    check_click_outputs(&c, &want, &format!("seed {seed:#x}"));
    let m = app.metrics();
    assert_eq!(
        m.late_records_dropped, want.late_dropped,
        "late records dropped (seed {seed:#x})"
    );
    // Interactive queries read the stores: per key, all keys, windows of a key; an unknown store is an error.
    let all = app.query_store("per-user", None).unwrap();
    let got: BTreeMap<Vec<u8>, i64> = all
        .iter()
        .map(|e| (e.key.to_vec(), decode_count(&e.value).unwrap()))
        .collect();
    assert_eq!(got, want.per_key);
    assert!(all.iter().all(|e| e.window.is_none()));
    let one = app.query_store("per-user", Some(b"user-7")).unwrap();
    assert_eq!(one.len(), 1);
    assert_eq!(
        decode_count(&one[0].value),
        want.per_key.get(&b"user-7"[..]).copied()
    );
    let windows = app.query_store("tumbling", Some(b"user-7")).unwrap();
    let want_windows: Vec<(Vec<u8>, i64)> = want
        .tumbling
        .iter()
        .filter(|(k, _)| WindowedKey::decode(k).unwrap().key == b"user-7"[..])
        .map(|(k, n)| (k.clone(), *n))
        .collect();
    let got_windows: Vec<(Vec<u8>, i64)> = windows
        .iter()
        .map(|e| {
            let w = e.window.unwrap();
            (
                wkey("user-7", w.start, w.end),
                decode_count(&e.value).unwrap(),
            )
        })
        .collect();
    assert_eq!(got_windows, want_windows);
    assert!(app
        .query_store("nope", None)
        .unwrap_err()
        .to_string()
        .contains("per-user"));
    app.close().unwrap();

    // Suppressed output: each closed window exactly once, never an intermediate count.
    let finals = read_all(&c.bootstrap, "hopping-final");
    assert_eq!(
        finals.len(),
        want.hopping_final.len(),
        "one final result per closed window"
    );
    for (k, _) in &finals {
        let wk = WindowedKey::decode(k.as_ref().unwrap()).unwrap();
        assert_eq!(wk.window.end - wk.window.start, HOP_SIZE);
    }
}

// ---------------------------------------------------------------- processes

const CHILD_ENV: &str = "FJORD_STREAMS_TEST_CHILD";

/// Not a test of its own: the entry point of a processing process started by the tests below (this binary
/// with `CHILD_ENV` set, run with `--ignored`). Ignored, so that a normal run does not count it as a passing
/// test; without the variable it returns at once.
#[test]
#[ignore = "the entry point of the processing processes the kill -9 tests start, not a test"]
fn child_process_entry_point() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    tracing_subscriber::fmt()
        .with_env_filter("fjord_streams=debug,info")
        .with_writer(std::io::stderr)
        .init();
    // bootstrap;app;state_dir;instance;guarantee;abort_in_commit (empty: never);commit_interval_ms
    let f: Vec<&str> = spec.split(';').collect();
    let mut cfg = StreamsConfig::new(f[1], f[0]);
    cfg.state_dir = f[2].into();
    cfg.instance_id = f[3].to_string();
    cfg.abort_in_commit = f[5].parse().ok();
    cfg.commit_interval = Duration::from_millis(f[6].parse().unwrap());
    cfg.session_timeout = Duration::from_secs(6);
    cfg.state_stores = StateStores::Fjall;
    if f[4] == "eos" {
        cfg.processing_guarantee = ProcessingGuarantee::ExactlyOnce;
    }
    let app = KafkaStreams::start(click_topology(), cfg).unwrap();
    let deadline = Instant::now() + Duration::from_secs(300);
    while Instant::now() < deadline {
        if let fjord_streams::StreamsState::Failed(e) = app.state() {
            panic!("child failed: {e}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A processing process; killed on drop, its log printed when the test is failing.
struct ChildProc(Child, std::path::PathBuf);

impl ChildProc {
    fn start(
        c: &Cluster,
        app: &str,
        state_dir: &std::path::Path,
        instance: &str,
        guarantee: &str,
    ) -> ChildProc {
        ChildProc::start_with(c, app, state_dir, instance, guarantee, None, 100)
    }

    /// `abort_in_commit`: see `StreamsConfig::abort_in_commit`.
    fn start_with(
        c: &Cluster,
        app: &str,
        state_dir: &std::path::Path,
        instance: &str,
        guarantee: &str,
        abort_in_commit: Option<u64>,
        commit_interval_ms: u64,
    ) -> ChildProc {
        let spec = format!(
            "{};{app};{};{instance};{guarantee};{};{commit_interval_ms}",
            c.bootstrap,
            state_dir.display(),
            abort_in_commit.map_or(String::new(), |n| n.to_string())
        );
        let log = state_dir.join(format!("{instance}.{}.log", std::process::id()));
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "child_process_entry_point",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, spec)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log_file))
            .spawn()
            .unwrap();
        ChildProc(child, log)
    }

    fn kill9(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }

    /// Waits (bounded) for the process to end by itself; its exit status.
    fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(st) = self.0.try_wait().unwrap() {
                return st;
            }
            assert!(Instant::now() < deadline, "the process did not end");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for ChildProc {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.1).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!("--- log of {} (last 60 lines) ---", self.1.display());
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
    }
}

fn progress(c: &Cluster, topic: &str) -> usize {
    read_all(&c.bootstrap, topic).len()
}

#[test]
fn a_killed_instance_restarts_from_its_changelog_and_the_results_equal_the_reference() {
    let seed = 0x5eed_0002;
    let partitions = 2;
    let clicks = clickstream(seed, 20_000, 60, partitions);
    let want = reference(&clicks, partitions);
    let c = Cluster::start();
    click_topics(&c, partitions);
    c.produce("clicks", &clicks);
    let state = tempfile::tempdir().unwrap();
    let mut child = ChildProc::start(&c, "crash-alos", state.path(), "a", "alos");
    // Mid-stream: some results are out, far from all.
    await_until("first results", || progress(&c, "per-user-counts") > 500);
    child.kill9();
    let before = table(&read_all(&c.bootstrap, "per-user-counts"));
    assert!(
        before != want.per_key,
        "the process was killed after finishing; the test needs more input"
    );
    let _child = ChildProc::start(&c, "crash-alos", state.path(), "a", "alos");
    check_click_outputs(
        &c,
        &want,
        &format!("after kill -9 and restart (at least once, seed {seed:#x})"),
    );
}

/// Per key (partition by partition, in offset order), the values of an update stream of counts must be exactly
/// 1, 2, ..., n: a repeated, skipped or reordered count is a duplicate or a loss. Returns the offending keys.
fn count_sequence_errors(records: &[PartKv]) -> Vec<String> {
    let mut last: HashMap<(i32, Vec<u8>), i64> = HashMap::new();
    let mut bad = Vec::new();
    for (p, k, v) in records {
        let k = k.clone().unwrap_or_default().to_vec();
        let Some(n) = v.as_deref().and_then(decode_count) else {
            bad.push(format!("{}: not a count", String::from_utf8_lossy(&k)));
            continue;
        };
        let prev = last.insert((*p, k.clone()), n).unwrap_or(0);
        if n != prev + 1 {
            bad.push(format!(
                "{}: {n} after {prev}",
                String::from_utf8_lossy(&k[..k.len().min(12)])
            ));
        }
    }
    bad
}

/// Exactly once: the process is killed with records of an open transaction in the output topic (checked: the
/// output read uncommitted is longer than read committed), restarted with the same instance id, and then the
/// output read read_committed must equal the reference and hold no duplicate: every key's count updates are
/// exactly 1..n and every final window result appears once. The checker is shown to catch a duplicate by
/// appending one to the topic.
#[test]
fn exactly_once_after_kill_restart_results_equal_the_reference() {
    let seed = 0x5eed_0002;
    let partitions = 2;
    let clicks = clickstream(seed, 20_000, 60, partitions);
    let want = reference(&clicks, partitions);
    let c = Cluster::start();
    click_topics(&c, partitions);
    let state = tempfile::tempdir().unwrap();
    // Long transactions (2 s), fed in chunks: the kill falls inside one that holds records.
    let start = || ChildProc::start_with(&c, "crash-eos", state.path(), "a", "eos", None, 2_000);
    let mut child = start();
    let chunks: Vec<&[(i32, String, String, i64)]> = clicks.chunks(2_000).collect();
    let mut next = 0;
    c.produce("clicks", chunks[next]);
    next += 1;
    await_until("a first committed transaction", || {
        progress(&c, "per-user-counts") > 0
    });
    let mut attempts = 0;
    loop {
        attempts += 1;
        assert!(attempts <= 4, "no kill fell inside an open transaction");
        let committed = progress(&c, "per-user-counts");
        c.produce("clicks", chunks[next]);
        next += 1;
        await_until("records of an open transaction in the output", || {
            read_topic(&c.bootstrap, "per-user-counts", false).len() > committed
        });
        child.kill9();
        let uncommitted = read_topic(&c.bootstrap, "per-user-counts", false).len();
        let committed = progress(&c, "per-user-counts");
        child = start();
        if uncommitted > committed {
            break;
        }
        // The transaction committed between the check and the kill: again, with the next chunk.
    }
    assert!(next < chunks.len(), "input left after the kill");
    for chunk in &chunks[next..] {
        c.produce("clicks", chunk);
    }
    let what = format!("after kill -9 mid-transaction and restart (exactly once, seed {seed:#x})");
    check_click_outputs(&c, &want, &what);
    for t in ["per-user-counts", "tumbling-counts"] {
        let errors = count_sequence_errors(&read_topic(&c.bootstrap, t, true));
        assert!(
            errors.is_empty(),
            "{what}: duplicates or gaps in {t}: {errors:?}"
        );
    }
    let finals = read_all(&c.bootstrap, "hopping-final");
    assert_eq!(
        finals.len(),
        want.hopping_final.len(),
        "{what}: one final result per window"
    );
    drop(child);

    // The check catches a duplicate: repeat the last update of one key at the end of its partition.
    let out = read_topic(&c.bootstrap, "per-user-counts", true);
    let (p, k, v) = out.last().unwrap().clone();
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &c.bootstrap)
        .create()
        .unwrap();
    producer
        .send(
            BaseRecord::to("per-user-counts")
                .partition(p)
                .key(&k.as_ref().unwrap()[..])
                .payload(&v.as_ref().unwrap()[..]),
        )
        .unwrap();
    producer.flush(Duration::from_secs(10)).unwrap();
    let errors = count_sequence_errors(&read_topic(&c.bootstrap, "per-user-counts", true));
    assert_eq!(
        errors.len(),
        1,
        "the injected duplicate is found: {errors:?}"
    );
}

/// At least once, a crash in the middle of a commit (the changelog entries written and acknowledged, the commit
/// markers not) followed by compaction of the changelog before the restart: compaction removes the older values
/// of the keys the unfinished commit wrote. The old restore, which dropped entries after the last marker, lost
/// those keys' state (counts too low after the restart); with each commit's entries and markers in one
/// transaction the unfinished commit is aborted and compaction keeps the committed values.
#[test]
fn an_at_least_once_crash_mid_commit_and_compaction_lose_no_state() {
    let seed = 0x5eed_0004;
    let partitions = 2;
    let clicks = clickstream(seed, 6_000, 40, partitions);
    let want = reference(&clicks, partitions);
    let c = Cluster::start_with(&[("log.cleaner.backoff.ms", "100")]);
    click_topics(&c, partitions);
    // The per-user store's changelog, made before the application (which keeps it): a segment per 100 ms,
    // compacted as soon as possible.
    let changelog = "compacted-per-user-changelog";
    c.create_topic_with(
        changelog,
        partitions,
        &[
            ("cleanup.policy", "compact"),
            ("segment.ms", "100"),
            ("min.cleanable.dirty.ratio", "0.01"),
        ],
    );
    c.produce("clicks", &clicks);
    let state = tempfile::tempdir().unwrap();
    let mut child = ChildProc::start_with(&c, "compacted", state.path(), "a", "alos", Some(2), 100);
    let status = child.wait_exit();
    let log = std::fs::read_to_string(&child.1).unwrap();
    assert!(
        !status.success() && log.contains("in the middle of a commit"),
        "the process aborted in its second commit: {status}"
    );
    // Compaction runs while the instance is down.
    std::thread::sleep(Duration::from_secs(3));
    let _child = ChildProc::start(&c, "compacted", state.path(), "a", "alos");
    check_click_outputs(
        &c,
        &want,
        &format!("after a crash mid-commit, compaction and a restart (seed {seed:#x})"),
    );
    // Compaction did run over the changelog: in the end each key is in it once.
    await_until("the changelog compacted to one entry per key", || {
        let entries: Vec<_> = read_all(&c.bootstrap, changelog)
            .into_iter()
            .filter(|(k, _)| k.as_ref().is_some_and(|k| !k.is_empty()))
            .collect();
        let keys: std::collections::HashSet<_> = entries.iter().map(|(k, _)| k.clone()).collect();
        entries.len() == keys.len()
    });
}

#[test]
fn two_instances_share_the_work_and_the_survivor_takes_over_a_killed_one() {
    let seed = 0x5eed_0003;
    let partitions = 4;
    let clicks = clickstream(seed, 20_000, 80, partitions);
    let want = reference(&clicks, partitions);
    let c = Cluster::start();
    click_topics(&c, partitions);
    let (s1, s2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut a = ChildProc::start(&c, "pair", s1.path(), "one", "alos");
    let _b = ChildProc::start(&c, "pair", s2.path(), "two", "alos");
    // Give both time to join one group before the data arrives.
    std::thread::sleep(Duration::from_secs(3));
    c.produce("clicks", &clicks[..10_000]);
    await_until("first results", || progress(&c, "per-user-counts") > 500);
    a.kill9();
    c.produce("clicks", &clicks[10_000..]);
    check_click_outputs(
        &c,
        &want,
        &format!("after one of two instances was killed (seed {seed:#x})"),
    );
}

// ---------------------------------------------------------------- tables and joins

#[test]
fn a_stream_joins_a_table_read_from_a_compacted_topic() {
    let c = Cluster::start();
    for (t, n) in [
        ("users", 2),
        ("views", 2),
        ("enriched", 2),
        ("enriched-inner", 2),
        ("users3", 3),
    ] {
        c.create_topic(t, n);
    }
    let b = StreamsBuilder::new();
    let users = b.table("users", "users-store");
    let views = b.stream("views");
    views
        .left_join(&users, |r, region| {
            let region = region.map_or("unknown".to_string(), |v| {
                String::from_utf8_lossy(v).into_owned()
            });
            Bytes::from(format!(
                "{}@{region}",
                String::from_utf8_lossy(r.value_bytes())
            ))
        })
        .to("enriched");
    views
        .join(&users, |r, region| {
            Bytes::from(format!(
                "{}@{}",
                String::from_utf8_lossy(r.value_bytes()),
                String::from_utf8_lossy(region)
            ))
        })
        .to("enriched-inner");
    let dir = tempfile::tempdir().unwrap();
    let app = KafkaStreams::start(b.build().unwrap(), c.config("join", dir.path())).unwrap();

    let part = |u: u32| (u % 2) as i32;
    let mut table: Vec<_> = (0..10)
        .map(|u| (part(u), format!("u{u}"), format!("region-{}", u % 3), 1_000))
        .collect();
    table.push((part(5), "u5".into(), "moved".into(), 1_001));
    c.produce("users", &table);
    // u3 leaves: a tombstone.
    let p: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &c.bootstrap)
        .create()
        .unwrap();
    p.send::<[u8], [u8]>(BaseRecord::to("users").partition(part(3)).key(b"u3"))
        .unwrap();
    p.flush(Duration::from_secs(10)).unwrap();
    await_until("the table is loaded", || {
        app.metrics().records_processed == 12
    });

    let views: Vec<_> = (0..12)
        .map(|u| (part(u), format!("u{u}"), format!("view{u}"), 2_000))
        .collect();
    c.produce("views", &views);
    await_until("all views joined", || {
        read_all(&c.bootstrap, "enriched").len() == 12
    });
    let got = |t| {
        let mut v: Vec<String> = read_all(&c.bootstrap, t)
            .into_iter()
            .map(|(_, v)| String::from_utf8(v.unwrap().to_vec()).unwrap())
            .collect();
        v.sort();
        v
    };
    let region = |u: u32| match u {
        3 | 10 | 11 => "unknown".to_string(),
        5 => "moved".to_string(),
        u => format!("region-{}", u % 3),
    };
    let mut want: Vec<String> = (0..12).map(|u| format!("view{u}@{}", region(u))).collect();
    want.sort();
    assert_eq!(got("enriched"), want);
    let inner: Vec<String> = want
        .into_iter()
        .filter(|v| !v.ends_with("@unknown"))
        .collect();
    await_until("inner join results", || {
        read_all(&c.bootstrap, "enriched-inner").len() >= inner.len()
    });
    assert_eq!(got("enriched-inner"), inner);
    app.close().unwrap();

    // A table and a stream with different partition counts cannot be joined.
    let b = StreamsBuilder::new();
    let t = b.table("users3", "u3-store");
    b.stream("views")
        .join(&t, |_, v| Bytes::copy_from_slice(v))
        .to("enriched");
    let e = KafkaStreams::start(b.build().unwrap(), c.config("join-bad", dir.path()))
        .err()
        .expect("co-partitioning is checked")
        .to_string();
    assert!(
        e.contains("co-partitioning") && e.contains("users3 has 3"),
        "{e}"
    );
}

#[test]
fn a_windowed_stream_stream_join_emits_each_pair_within_the_window_once() {
    let c = Cluster::start();
    for t in ["orders", "payments", "matched"] {
        c.create_topic(t, 2);
    }
    let b = StreamsBuilder::new();
    b.stream("orders")
        .join_windowed(
            &b.stream("payments"),
            "order-payment",
            fjord_streams::JoinWindows::of(Duration::from_secs(5)).grace(Duration::from_secs(3600)),
            |l, r| {
                Bytes::from(format!(
                    "{}+{}",
                    String::from_utf8_lossy(l.value_bytes()),
                    String::from_utf8_lossy(r.value_bytes())
                ))
            },
        )
        .to("matched");
    let dir = tempfile::tempdir().unwrap();
    let app = KafkaStreams::start(b.build().unwrap(), c.config("sjoin", dir.path())).unwrap();
    let mut rng = Rng(99);
    let mut side = |name: &str| -> Vec<(i32, String, String, i64)> {
        (0..150)
            .map(|i| {
                let k = rng.next() % 20;
                (
                    (k % 2) as i32,
                    format!("o{k}"),
                    format!("{name}{i}"),
                    BASE + (rng.next() % 60_000) as i64,
                )
            })
            .collect()
    };
    let (orders, payments) = (side("L"), side("R"));
    let mut want = Vec::new();
    for l in &orders {
        for r in &payments {
            if l.1 == r.1 && (l.3 - r.3).abs() <= 5_000 {
                want.push(format!("{}+{}", l.2, r.2));
            }
        }
    }
    want.sort();
    assert!(want.len() > 20, "the input has pairs to join");
    // Interleaved in two rounds, so that pairs are completed from both sides.
    c.produce("orders", &orders[..75]);
    c.produce("payments", &payments[..75]);
    c.produce("orders", &orders[75..]);
    c.produce("payments", &payments[75..]);
    let got = || {
        let mut v: Vec<String> = read_all(&c.bootstrap, "matched")
            .into_iter()
            .map(|(_, v)| String::from_utf8(v.unwrap().to_vec()).unwrap())
            .collect();
        v.sort();
        v
    };
    await_until("every pair joined", || got().len() >= want.len());
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(got(), want);
    app.close().unwrap();
}

/// After a crash in the middle of a commit one store's changelog may end with a newer commit marker than
/// another's. Simulated here by appending a newer marker (the documented format: stream time, then per source
/// the topic and next offset) to store `a`'s changelog: store `b` must still judge lateness by its own stream
/// time, so a record that is on time for `b` is counted.
#[test]
fn a_store_restored_from_an_older_commit_marker_judges_lateness_by_its_own_stream_time() {
    let c = Cluster::start();
    for t in ["st-in", "st-a", "st-b"] {
        c.create_topic(t, 1);
    }
    let topology = || {
        let b = StreamsBuilder::new();
        let g = b.stream("st-in").group_by_key();
        for s in ["a", "b"] {
            g.windowed_by(TimeWindows::tumbling(Duration::from_secs(10)))
                .count(s)
                .to(&format!("st-{s}"));
        }
        b.build().unwrap()
    };
    let dir = tempfile::tempdir().unwrap();
    let rec = |ts: i64| (0, "k".to_string(), "v".to_string(), ts);
    c.produce("st-in", &[rec(1_000), rec(5_000)]);
    let app = KafkaStreams::start(topology(), c.config("markers", dir.path())).unwrap();
    await_until("two records processed", || {
        app.metrics().records_processed == 2
    });
    app.close().unwrap();

    let mut marker = 100_000i64.to_be_bytes().to_vec();
    marker.extend_from_slice(&1u16.to_be_bytes());
    marker.extend_from_slice(&5u16.to_be_bytes());
    marker.extend_from_slice(b"st-in");
    marker.extend_from_slice(&2i64.to_be_bytes());
    let p: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &c.bootstrap)
        .create()
        .unwrap();
    p.send(
        BaseRecord::to("markers-a-changelog")
            .partition(0)
            .key(&b""[..])
            .payload(&marker[..]),
    )
    .unwrap();
    p.flush(Duration::from_secs(10)).unwrap();

    c.produce("st-in", &[rec(6_000)]);
    let _app = KafkaStreams::start(topology(), c.config("markers", dir.path())).unwrap();
    let want = BTreeMap::from([(wkey("k", 0, 10_000), 3)]);
    await_table(
        &c.bootstrap,
        "st-b",
        &want,
        "store b after store a restored a newer marker",
    );
}

// ---------------------------------------------------------------- stored state that is not ours

/// A commit marker in the documented format: stream time, then per source its topic and next offset.
fn commit_marker(stream_time: i64, sources: &[(&str, i64)]) -> Vec<u8> {
    let mut m = stream_time.to_be_bytes().to_vec();
    m.extend_from_slice(&(sources.len() as u16).to_be_bytes());
    for (t, o) in sources {
        m.extend_from_slice(&(t.len() as u16).to_be_bytes());
        m.extend_from_slice(t.as_bytes());
        m.extend_from_slice(&o.to_be_bytes());
    }
    m
}

/// Writes records (key, value) to partition 0 of `topic` outside any transaction.
fn write_raw(c: &Cluster, topic: &str, records: &[(&[u8], &[u8])]) {
    let p: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &c.bootstrap)
        .create()
        .unwrap();
    for (k, v) in records {
        p.send(BaseRecord::to(topic).partition(0).key(*k).payload(*v))
            .unwrap();
    }
    p.flush(Duration::from_secs(10)).unwrap();
}

/// A count store whose changelog holds a value that is not an 8-byte count, and a windowed store whose
/// changelog holds a key that is not a window key: each stops its application with an error naming the store
/// and saying what to do, instead of counting on from 0 (the old code) or keeping the entry for ever.
#[test]
fn stored_values_and_keys_in_a_foreign_format_stop_the_task_with_a_clear_error() {
    let c = Cluster::start();
    for t in ["mal-in", "mal-out"] {
        c.create_topic(t, 1);
    }
    let dir = tempfile::tempdir().unwrap();
    // (application, changelog key, changelog value, words the error must contain)
    type Case<'a> = (&'a str, &'a [u8], &'a [u8], &'a [&'a str]);
    let cases: [Case; 2] = [
        (
            "malcount",
            b"\0k",
            b"abc",
            &[
                "store `counts`",
                "3 bytes",
                "8-byte",
                "reset the application",
            ],
        ),
        (
            "malwindow",
            b"zz",
            &[0, 0, 0, 0, 0, 0, 0, 1],
            &[
                "store `counts`",
                "7a7a",
                "not a window key",
                "another store",
            ],
        ),
    ];
    for (app, key, value, want) in cases {
        let changelog = format!("{app}-counts-changelog");
        c.create_topic_with(&changelog, 1, &[("cleanup.policy", "compact")]);
        write_raw(
            &c,
            &changelog,
            &[(key, value), (b"", &commit_marker(0, &[("mal-in", 0)]))],
        );
        let b = StreamsBuilder::new();
        let g = b.stream("mal-in").group_by_key();
        if app == "malcount" {
            g.count("counts").to("mal-out");
        } else {
            g.windowed_by(TimeWindows::tumbling(Duration::from_secs(10)))
                .count("counts")
                .to("mal-out");
        }
        if app == "malcount" {
            c.produce("mal-in", &[(0, "k".into(), "v".into(), 1_000)]);
        }
        let streams = KafkaStreams::start(b.build().unwrap(), c.config(app, dir.path())).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let err = loop {
            if let fjord_streams::StreamsState::Failed(e) = streams.state() {
                break e;
            }
            assert!(
                Instant::now() < deadline,
                "{app}: the application did not stop (processed {})",
                streams.metrics().records_processed
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        for w in want {
            assert!(err.contains(w), "{app}: `{w}` missing in: {err}");
        }
        assert!(
            read_all(&c.bootstrap, "mal-out").is_empty(),
            "{app}: nothing counted"
        );
    }
}

/// With a commit interval far away and a tiny write cache, the cache is written to the changelog (inside the
/// open transaction, so read uncommitted) long before the commit; after the commit the changelog holds every
/// key's count once, exactly.
#[test]
fn a_full_write_cache_goes_to_the_changelog_before_the_commit() {
    let c = Cluster::start();
    c.create_topic("wc-in", 1);
    let b = StreamsBuilder::new();
    b.stream("wc-in").group_by_key().count("bounded");
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = c.config("cache", dir.path());
    cfg.commit_interval = Duration::from_secs(300);
    cfg.cache_max_bytes = 2_000;
    let recs: Vec<_> = (0..500)
        .map(|i| (0, format!("key-{i}"), "v".to_string(), 1_000 + i as i64))
        .collect();
    c.produce("wc-in", &recs);
    let app = KafkaStreams::start(b.build().unwrap(), cfg).unwrap();
    await_until("500 records processed", || {
        app.metrics().records_processed == 500
    });
    await_until("changelog entries written before the commit", || {
        read_topic(&c.bootstrap, "cache-bounded-changelog", false).len() >= 400
    });
    assert_eq!(app.metrics().commits, 0, "no commit yet");
    assert!(
        read_all(&c.bootstrap, "cache-bounded-changelog").is_empty(),
        "nothing committed yet"
    );
    app.close().unwrap();
    let entries: Vec<_> = read_all(&c.bootstrap, "cache-bounded-changelog")
        .into_iter()
        .filter(|(k, _)| k.as_ref().is_some_and(|k| !k.is_empty()))
        .collect();
    assert_eq!(entries.len(), 500, "each key once");
    assert!(entries
        .iter()
        .all(|(_, v)| decode_count(v.as_ref().unwrap()) == Some(1)));
}

/// The local fjall store is a cache of the changelog: whatever an earlier run left in it is cleared when the
/// task opens and the state comes from the changelog alone (which may be behind the local store after a crash).
#[test]
fn a_fjall_store_is_rebuilt_from_the_changelog_when_its_task_opens() {
    let c = Cluster::start();
    for t in ["fj-in", "fj-out"] {
        c.create_topic(t, 1);
    }
    let dir = tempfile::tempdir().unwrap();
    {
        let sup = fjord_streams::store::FjallSupplier::open(&dir.path().join("rebuild")).unwrap();
        let mut s = fjord_streams::store::StoreSupplier::open(&sup, "fj", 0).unwrap();
        s.write_batch(&mut std::iter::once((
            Bytes::from_static(b"\0k"),
            Some(fjord_streams::encode_count(41)),
        )))
        .unwrap();
    }
    let b = StreamsBuilder::new();
    b.stream("fj-in").group_by_key().count("fj").to("fj-out");
    let mut cfg = c.config("rebuild", dir.path());
    cfg.state_stores = StateStores::Fjall;
    c.produce("fj-in", &[(0, "k".into(), "v".into(), 1_000)]);
    let app = KafkaStreams::start(b.build().unwrap(), cfg).unwrap();
    await_table(
        &c.bootstrap,
        "fj-out",
        &BTreeMap::from([(b"k".to_vec(), 1)]),
        "a count over a store left with 41 by an earlier run",
    );
    app.close().unwrap();
}

/// The group's committed offset of `topic`-`partition`, `None` when there is none.
fn committed_offset(bootstrap: &str, group: &str, topic: &str, partition: i32) -> Option<i64> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, partition);
    let got = c.committed_offsets(tpl, Duration::from_secs(10)).unwrap();
    match got.elements()[0].offset() {
        Offset::Offset(o) => Some(o),
        _ => None,
    }
}

/// Exactly once, a record that `try_flat_map` refuses stops the application with the record's position, and
/// nothing from the last commit on is committed: the open transaction (the outputs, changelog entries and input
/// offsets before it) is aborted within seconds, so the next start reads the refused record again. The group
/// leave's revoke callback committed that transaction before, with the refused record's offset.
/// (At least once: `at_least_once_a_refused_record_is_not_committed_and_the_records_before_it_are_not_repeated`.)
#[test]
fn a_refused_record_stops_the_application_before_its_offset_is_committed() {
    let c = Cluster::start();
    let dir = tempfile::tempdir().unwrap();
    let app = "refuse-eos";
    let (input, output) = (format!("{app}-in"), format!("{app}-out"));
    c.create_topic(&input, 1);
    c.create_topic(&output, 1);
    let b = StreamsBuilder::new();
    b.stream(&input)
        .try_flat_map(|r: Record| {
            if r.value.as_deref() == Some(b"bad".as_slice()) {
                Err("not a word".to_string())
            } else {
                Ok(Some(r))
            }
        })
        .group_by_key()
        .count("n")
        .to(&output);
    let mut cfg = c.config(app, dir.path());
    cfg.processing_guarantee = ProcessingGuarantee::ExactlyOnce;
    c.produce(
        &input,
        &[
            (0, "a".into(), "word".into(), 1_000),
            (0, "b".into(), "bad".into(), 1_001),
            (0, "c".into(), "word".into(), 1_002),
        ],
    );
    let started = Instant::now();
    let streams = KafkaStreams::start(b.build().unwrap(), cfg).unwrap();
    await_until("the application to fail", || {
        matches!(streams.state(), fjord_streams::StreamsState::Failed(_))
    });
    // The abort does not wait for delivery reports nobody serves (it took the 30 s client timeout).
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{app}: failed after {:?}",
        started.elapsed()
    );
    let err = streams.close().unwrap_err().to_string();
    assert!(
        err.contains(&format!("{input} partition 0 offset 1: not a word")),
        "{app}: {err}"
    );
    let committed = committed_offset(&c.bootstrap, app, &input, 0);
    assert!(
        committed.is_none_or(|o| o <= 1),
        "{app}: committed past the refused record: {committed:?}"
    );
}

/// A count of the records of key "a" of `input` that refuses the value "bad" (when `refuse`), written to `output`.
fn refusing_count(input: &str, output: &str, refuse: bool) -> Topology {
    let b = StreamsBuilder::new();
    b.stream(input)
        .try_flat_map(move |r: Record| {
            if refuse && r.value.as_deref() == Some(b"bad".as_slice()) {
                Err("not a word".to_string())
            } else {
                Ok(Some(r))
            }
        })
        .group_by_key()
        .count("n")
        .to(output);
    b.build().unwrap()
}

/// The counts written to `output`, in order.
fn counts(c: &Cluster, output: &str) -> Vec<i64> {
    read_all(&c.bootstrap, output)
        .iter()
        .map(|(_, v)| decode_count(v.as_deref().unwrap_or_default()).expect("8-byte count"))
        .collect()
}

/// At least once, a record that `try_flat_map` refuses stops the application, its offset is not committed and
/// the records before it are (with the state that counts them): every restart stops at it again without counting
/// or sending the records before it again, and once it is accepted it is counted once. The group leave's revoke
/// callback used to commit past it (the next start never saw it: a count missing).
#[test]
fn at_least_once_a_refused_record_is_not_committed_and_the_records_before_it_are_not_repeated() {
    let c = Cluster::start();
    let dir = tempfile::tempdir().unwrap();
    let app = "refuse-alo";
    let (input, output) = (format!("{app}-in"), format!("{app}-out"));
    c.create_topic(&input, 1);
    c.create_topic(&output, 1);
    c.produce(
        &input,
        &[
            (0, "a".into(), "word".into(), 1_000),
            (0, "a".into(), "word".into(), 1_001),
            (0, "a".into(), "bad".into(), 1_002),
            (0, "a".into(), "word".into(), 1_003),
        ],
    );
    for run in 0..3 {
        let streams = KafkaStreams::start(
            refusing_count(&input, &output, true),
            c.config(app, dir.path()),
        )
        .unwrap();
        await_until("the application to fail", || {
            matches!(streams.state(), fjord_streams::StreamsState::Failed(_))
        });
        let err = streams.close().unwrap_err().to_string();
        assert!(
            err.contains(&format!("{input} partition 0 offset 2: not a word")),
            "{app} run {run}: {err}"
        );
        assert_eq!(
            committed_offset(&c.bootstrap, app, &input, 0),
            Some(2),
            "{app} run {run}: the committed offset is the refused record's"
        );
        assert_eq!(
            counts(&c, &output),
            [1, 2],
            "{app} run {run}: the records before the refused one are counted and sent once"
        );
    }
    // Accepted now: counted once, from the committed state.
    let streams = KafkaStreams::start(
        refusing_count(&input, &output, false),
        c.config(app, dir.path()),
    )
    .unwrap();
    await_until("the last two records to be counted", || {
        counts(&c, &output).len() >= 4
    });
    await_until("the offsets to be committed", || {
        committed_offset(&c.bootstrap, app, &input, 0) == Some(4)
    });
    streams.close().unwrap();
    assert_eq!(counts(&c, &output), [1, 2, 3, 4], "{app}");
}

/// At least once, an output the broker refuses (larger than the output topic's `max.message.bytes`) stops the
/// application, and the input whose output was lost is not committed, while the inputs before it, whose outputs
/// were acknowledged, are. Once the topic takes it, the next start delivers it: nothing lost. The first commit
/// used to take the delivery error away, and the group leave's revoke callback then committed past the input.
#[test]
fn at_least_once_an_output_that_is_not_delivered_is_not_committed_past() {
    use rdkafka::admin::{AlterConfig, ResourceSpecifier};
    let c = Cluster::start();
    let dir = tempfile::tempdir().unwrap();
    let app = "refused-output-alo";
    let (input, output) = (format!("{app}-in"), format!("{app}-out"));
    c.create_topic(&input, 1);
    c.create_topic_with(&output, 1, &[("max.message.bytes", "2000")]);
    let topology = || {
        let b = StreamsBuilder::new();
        b.stream(&input).to(&output);
        b.build().unwrap()
    };
    let record = |i: i64, size: usize| {
        (
            0,
            format!("k{i}"),
            format!("{i:04}").repeat(size / 4),
            1_000 + i,
        )
    };
    let values = |records: &[(i32, String, String, i64)]| {
        records.iter().map(|r| r.2.clone()).collect::<Vec<_>>()
    };
    let first: Vec<_> = (0..3).map(|i| record(i, 8)).collect();
    let streams = KafkaStreams::start(topology(), c.config(app, dir.path())).unwrap();
    c.produce(&input, &first);
    await_until("the first outputs", || {
        read_all(&c.bootstrap, &output).len() >= 3
    });
    // The large record (offset 3) is refused; the ones after it are delivered.
    let second = vec![record(3, 4000), record(4, 8), record(5, 8)];
    c.produce(&input, &second);
    await_until("the application to fail", || {
        matches!(streams.state(), fjord_streams::StreamsState::Failed(_))
    });
    let err = streams.close().unwrap_err().to_string();
    assert!(
        err.contains(&output) && err.to_lowercase().contains("too large"),
        "{app}: {err}"
    );
    // The failure's own message, its kind said once (close used to wrap it as a client error again).
    assert_eq!(err.matches("kafka client:").count(), 1, "{app}: {err}");
    assert_eq!(
        committed_offset(&c.bootstrap, app, &input, 0),
        Some(3),
        "{app}: committed up to the input whose output was refused"
    );
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &c.bootstrap)
        .create()
        .unwrap();
    let alter =
        AlterConfig::new(ResourceSpecifier::Topic(&output)).set("max.message.bytes", "1000000");
    let r =
        c.rt.block_on(admin.alter_configs([&alter], &AdminOptions::new()))
            .unwrap();
    assert!(r[0].is_ok(), "alter {output}: {r:?}");
    let streams = KafkaStreams::start(topology(), c.config(app, dir.path())).unwrap();
    await_until("the offsets to be committed", || {
        committed_offset(&c.bootstrap, app, &input, 0) == Some(6)
    });
    streams.close().unwrap();
    let got: Vec<String> = read_all(&c.bootstrap, &output)
        .iter()
        .map(|(_, v)| String::from_utf8(v.clone().unwrap_or_default().to_vec()).unwrap())
        .collect();
    // The first three once, not sent again; then the ones after the refused one if they were delivered (not in
    // its batch), and from the restart the refused one and those after it.
    let (first, second) = (values(&first), values(&second));
    assert!(got.len() >= 6, "{app}: {} outputs", got.len());
    assert_eq!(got[..3], first[..], "{app}");
    assert_eq!(got[got.len() - 3..], second[..], "{app}");
    assert!(
        got[3..got.len() - 3]
            .iter()
            .all(|v| second[1..].contains(v)),
        "{app}: {:?}",
        &got[3..got.len() - 3]
    );
}

// ---------------------------------------------------------------- a broker that stalls

/// A TCP proxy on 127.0.0.1 in front of the broker (which advertises the proxy's address, so every client
/// connects through it) that can stall the writes to one topic: while stalled, a connection whose next request is
/// a Produce request naming the topic, or a request of one of the further API keys given, forwards nothing more
/// (that request and the ones after it stay unanswered);
/// when the stall ends such connections are closed and their held requests dropped, never forwarded late.
/// [`StallProxy::held`] tells how many requests of an API key were held.
struct StallProxy {
    addr: std::net::SocketAddr,
    stall: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// The API key of each request held so far.
    held: std::sync::Arc<std::sync::Mutex<Vec<i16>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    conns: std::sync::Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
    threads: std::sync::Arc<std::sync::Mutex<Vec<std::thread::JoinHandle<()>>>>,
    listener: Option<std::net::TcpListener>,
    accept: Option<std::thread::JoinHandle<()>>,
}

impl StallProxy {
    /// Binds the proxy's port; [`StallProxy::run`] starts it once the broker's address is known.
    fn bind() -> StallProxy {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        StallProxy {
            addr: listener.local_addr().unwrap(),
            stall: Default::default(),
            held: Default::default(),
            stop: Default::default(),
            conns: Default::default(),
            threads: Default::default(),
            listener: Some(listener),
            accept: None,
        }
    }

    fn run(&mut self, upstream: std::net::SocketAddr, topic: &str, api_keys: &[i16]) {
        let api_keys = api_keys.to_vec();
        use std::sync::atomic::Ordering::SeqCst;
        let listener = self.listener.take().unwrap();
        listener.set_nonblocking(true).unwrap();
        let (stall, held, stop, conns, threads) = (
            self.stall.clone(),
            self.held.clone(),
            self.stop.clone(),
            self.conns.clone(),
            self.threads.clone(),
        );
        let topic = topic.as_bytes().to_vec();
        self.accept = Some(std::thread::spawn(move || {
            while !stop.load(SeqCst) {
                let client = match listener.accept() {
                    Ok((s, _)) => s,
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(20));
                        continue;
                    }
                };
                client.set_nonblocking(false).unwrap();
                let Ok(server) =
                    std::net::TcpStream::connect_timeout(&upstream, Duration::from_secs(5))
                else {
                    continue;
                };
                {
                    let mut c = conns.lock().unwrap();
                    c.push(client.try_clone().unwrap());
                    c.push(server.try_clone().unwrap());
                }
                let (mut from_server, mut to_client) =
                    (server.try_clone().unwrap(), client.try_clone().unwrap());
                let back = std::thread::spawn(move || {
                    let _ = std::io::copy(&mut from_server, &mut to_client);
                    let _ = to_client.shutdown(std::net::Shutdown::Both);
                });
                let (stall, held, stop, topic, api_keys) = (
                    stall.clone(),
                    held.clone(),
                    stop.clone(),
                    topic.clone(),
                    api_keys.clone(),
                );
                let forth = std::thread::spawn(move || {
                    use std::io::{Read, Write};
                    let (mut client, mut server) = (client, server);
                    loop {
                        let mut len = [0u8; 4];
                        if client.read_exact(&mut len).is_err() {
                            break;
                        }
                        let mut frame = vec![0u8; i32::from_be_bytes(len).max(0) as usize];
                        if client.read_exact(&mut frame).is_err() {
                            break;
                        }
                        let key =
                            (frame.len() >= 2).then(|| i16::from_be_bytes([frame[0], frame[1]]));
                        let produce_to_topic = key == Some(0)
                            && frame.windows(topic.len()).any(|w| w == topic.as_slice());
                        let other = key.is_some_and(|k| api_keys.contains(&k));
                        if stall.load(SeqCst) && (produce_to_topic || other) {
                            held.lock().unwrap().extend(key);
                            while stall.load(SeqCst) && !stop.load(SeqCst) {
                                std::thread::sleep(Duration::from_millis(20));
                            }
                            break;
                        }
                        if server.write_all(&len).is_err() || server.write_all(&frame).is_err() {
                            break;
                        }
                    }
                    let _ = client.shutdown(std::net::Shutdown::Both);
                    let _ = server.shutdown(std::net::Shutdown::Both);
                });
                threads.lock().unwrap().extend([back, forth]);
            }
        }));
    }

    fn set_stall(&self, on: bool) {
        self.stall.store(on, std::sync::atomic::Ordering::SeqCst);
    }

    /// How many requests of API key `key` were held so far.
    fn held(&self, key: i16) -> usize {
        self.held
            .lock()
            .unwrap()
            .iter()
            .filter(|&&k| k == key)
            .count()
    }
}

/// A cluster whose clients all connect through a running [`StallProxy`] (the broker advertises the proxy's
/// address), which stalls the requests naming `topic` (only those of `api_keys`, when given) while its stall is on.
fn stalled_cluster(topic: &str, api_keys: &[i16]) -> (StallProxy, Cluster) {
    let mut proxy = StallProxy::bind();
    let advertised = format!("PLAINTEXT://{}", proxy.addr);
    let c = Cluster::start_with(&[("advertised.listeners", &advertised)]);
    proxy.run(c.broker.as_ref().unwrap().local_addr(), topic, api_keys);
    (proxy, c)
}

impl Drop for StallProxy {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
        for s in self.conns.lock().unwrap().drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
        for t in self.threads.lock().unwrap().drain(..) {
            let _ = t.join();
        }
    }
}

/// At least once, outputs the broker does not acknowledge in time (a stalled broker: the commit's flush times
/// out) are purged and count as lost: the commit commits the inputs before the first one whose output was not
/// acknowledged, and the restart sends only from there. The commit used to commit nothing when the flush timed
/// out (what was delivered was not known), so every restart against a slow broker sent everything since the last
/// commit again.
#[test]
fn at_least_once_outputs_of_a_stalled_broker_are_purged_and_the_commit_stays_precise() {
    let app = "stalled-alo";
    let (input, output, slow) = (
        format!("{app}-in"),
        format!("{app}-out"),
        format!("{app}-slow"),
    );
    let (proxy, c) = stalled_cluster(&slow, &[]);
    let dir = tempfile::tempdir().unwrap();
    c.create_topic(&input, 1);
    c.create_topic(&output, 1);
    c.create_topic(&slow, 1);
    let topology = || {
        let b = StreamsBuilder::new();
        let parts = b.stream(&input).branch(vec![
            Box::new(|r: &Record| r.key.as_deref().is_some_and(|k| k.starts_with(b"slow"))),
            Box::new(|_: &Record| true),
        ]);
        parts[0].to(&slow);
        parts[1].to(&output);
        b.build().unwrap()
    };
    let config = || {
        let mut cfg = c.config(app, dir.path());
        // Only the commits at the end of a run: the inputs before the stall are delivered, not committed.
        cfg.commit_interval = Duration::from_secs(300);
        cfg.delivery_timeout = Duration::from_secs(2);
        cfg
    };
    let rec = |i: i64, key: &str| (0, key.to_string(), format!("v{i}"), 1_000 + i);
    let keys = |topic: &str| {
        read_all(&c.bootstrap, topic)
            .iter()
            .map(|(k, _)| String::from_utf8(k.clone().unwrap_or_default().to_vec()).unwrap())
            .collect::<Vec<_>>()
    };
    let streams = KafkaStreams::start(topology(), config()).unwrap();
    c.produce(&input, &[rec(0, "k0"), rec(1, "k1"), rec(2, "k2")]);
    await_until("the first outputs", || keys(&output).len() >= 3);
    assert_eq!(
        committed_offset(&c.bootstrap, app, &input, 0),
        None,
        "{app}"
    );
    // The output of input 3 stalls, and so does the one of input 4 behind it on the same connection.
    proxy.set_stall(true);
    c.produce(&input, &[rec(3, "slow3"), rec(4, "k4")]);
    await_until("inputs 3 and 4 to be processed", || {
        streams.metrics().records_processed >= 5
    });
    let closing = Instant::now();
    let err = streams.close().unwrap_err().to_string();
    assert!(
        closing.elapsed() < Duration::from_secs(20),
        "{app}: closed after {:?}",
        closing.elapsed()
    );
    assert_eq!(
        committed_offset(&c.bootstrap, app, &input, 0),
        Some(3),
        "{app}: committed up to the input whose output was not acknowledged ({err})"
    );
    proxy.set_stall(false);
    let streams = KafkaStreams::start(topology(), config()).unwrap();
    await_until("the outputs of inputs 3 and 4", || {
        !keys(&slow).is_empty() && keys(&output).len() >= 4
    });
    streams.close().unwrap();
    assert_eq!(
        committed_offset(&c.bootstrap, app, &input, 0),
        Some(5),
        "{app}"
    );
    // The outputs delivered before the stall are not sent again. The one that was purged is sent once (it never
    // reached the broker: the proxy dropped it); the output of input 4 is sent again (at least once), and is there
    // twice if its request went out before the stalled one.
    let out = keys(&output);
    assert_eq!(out[..3], ["k0", "k1", "k2"], "{app}: {out:?}");
    assert!(
        (4..=5).contains(&out.len()) && out[3..].iter().all(|k| k == "k4"),
        "{app}: {out:?}"
    );
    assert_eq!(keys(&slow), ["slow3"], "{app}");
}

// ---------------------------------------------------------------- lost outputs of tasks with stores

/// Raises `topic`'s `max.message.bytes` so that it takes the large records it refused.
fn accept_large_records(c: &Cluster, topic: &str) {
    use rdkafka::admin::{AlterConfig, ResourceSpecifier};
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &c.bootstrap)
        .create()
        .unwrap();
    let alter =
        AlterConfig::new(ResourceSpecifier::Topic(topic)).set("max.message.bytes", "1000000");
    let r =
        c.rt.block_on(admin.alter_configs([&alter], &AdminOptions::new()))
            .unwrap();
    assert!(r[0].is_ok(), "alter {topic}: {r:?}");
}

/// Starts the application, waits until it fails on the output the broker refuses, and closes it.
fn run_until_refused(topology: Topology, config: StreamsConfig, output: &str) {
    let streams = KafkaStreams::start(topology, config).unwrap();
    await_until("the application to fail", || {
        matches!(streams.state(), fjord_streams::StreamsState::Failed(_))
    });
    let err = streams.close().unwrap_err().to_string();
    assert!(
        err.contains(output) && err.to_lowercase().contains("too large"),
        "{err}"
    );
}

/// A table of counts with its long keys abbreviated, for readable failures.
fn shown(t: &BTreeMap<Vec<u8>, i64>) -> BTreeMap<String, i64> {
    t.iter()
        .map(|(k, v)| {
            let k = String::from_utf8_lossy(k);
            let k = if k.len() > 16 {
                format!("{}..({} bytes)", &k[..4], k.len())
            } else {
                k.into_owned()
            };
            (k, *v)
        })
        .collect()
}

/// The committed content of a count store's changelog: key → count (commit markers left out).
fn changelog_counts(c: &Cluster, changelog: &str) -> BTreeMap<Vec<u8>, i64> {
    let mut t = BTreeMap::new();
    for (k, v) in read_all(&c.bootstrap, changelog) {
        let k = k.unwrap_or_default();
        let Some(k) = k.strip_prefix(&[0u8][..]) else {
            continue;
        };
        match v {
            Some(v) => t.insert(k.to_vec(), decode_count(&v).expect("8-byte count")),
            None => t.remove(k),
        };
    }
    t
}

/// At least once, an output of a task with a store that is lost (refused by the broker): the run commits neither
/// the task's offsets nor its state past the last commit, so the committed offset and the committed state (the
/// changelog, read_committed) agree; every restart recounts from that state (outputs repeat, counts are never
/// multiplied) and no input is skipped: once the output is taken, the counts equal the reference.
#[test]
fn at_least_once_a_lost_output_of_a_task_with_a_store_keeps_its_offsets_and_state_together() {
    let c = Cluster::start();
    let dir = tempfile::tempdir().unwrap();
    let app = "lost-count-alo";
    let (input, output) = (format!("{app}-in"), format!("{app}-out"));
    c.create_topic(&input, 1);
    c.create_topic_with(&output, 1, &[("max.message.bytes", "2000")]);
    let topology = || {
        let b = StreamsBuilder::new();
        b.stream(&input).group_by_key().count("n").to(&output);
        b.build().unwrap()
    };
    let changelog = format!("{app}-n-changelog");
    let big = "B".repeat(3000);
    let rec = |i: i64, key: &str| (0, key.to_string(), format!("v{i}"), 1_000 + i);
    let streams = KafkaStreams::start(topology(), c.config(app, dir.path())).unwrap();
    c.produce(&input, &[rec(0, "a"), rec(1, "a")]);
    await_until("the first two inputs to be committed", || {
        committed_offset(&c.bootstrap, app, &input, 0) == Some(2)
    });
    // The count of `big` (input 2) is refused; those of inputs 3 and 4 are delivered if processed before the run
    // fails.
    c.produce(&input, &[rec(2, &big), rec(3, "a"), rec(4, "b")]);
    await_until("the application to fail", || {
        matches!(streams.state(), fjord_streams::StreamsState::Failed(_))
    });
    let _ = streams.close();
    for run in 1..=3 {
        assert_eq!(
            committed_offset(&c.bootstrap, app, &input, 0),
            Some(2),
            "{app} run {run}: the offset stays at the last commit"
        );
        assert_eq!(
            shown(&changelog_counts(&c, &changelog)),
            shown(&BTreeMap::from([(b"a".to_vec(), 2)])),
            "{app} run {run}: the committed state reflects exactly the committed inputs"
        );
        if run < 3 {
            run_until_refused(topology(), c.config(app, dir.path()), &output);
        }
    }
    // Counted from the committed state each time: "a" is never counted past 3.
    let outputs = read_all(&c.bootstrap, &output);
    for (k, v) in &outputs {
        let (k, n) = (
            k.clone().unwrap_or_default(),
            decode_count(v.as_deref().unwrap()).unwrap(),
        );
        let ok = match &k[..] {
            b"a" => (1..=3).contains(&n),
            b"b" => n == 1,
            _ => false,
        };
        assert!(ok, "{app}: output {:?} = {n}", String::from_utf8_lossy(&k));
    }
    accept_large_records(&c, &output);
    let streams = KafkaStreams::start(topology(), c.config(app, dir.path())).unwrap();
    await_until("every input to be committed", || {
        committed_offset(&c.bootstrap, app, &input, 0) == Some(5)
    });
    let want = BTreeMap::from([
        (b"a".to_vec(), 3),
        (b"b".to_vec(), 1),
        (big.as_bytes().to_vec(), 1),
    ]);
    let state: BTreeMap<Vec<u8>, i64> = streams
        .query_store("n", None)
        .unwrap()
        .into_iter()
        .map(|e| (e.key.to_vec(), decode_count(&e.value).unwrap()))
        .collect();
    assert_eq!(shown(&state), shown(&want), "{app}: the store");
    streams.close().unwrap();
    assert_eq!(
        shown(&changelog_counts(&c, &changelog)),
        shown(&want),
        "{app}: the changelog"
    );
    assert_eq!(
        shown(&table(&read_all(&c.bootstrap, &output))),
        shown(&want),
        "{app}: the outputs"
    );
}

/// At least once, a final result of a suppressed window (emitted when stream time closes the window) that is lost:
/// the input that closed the window is not committed, nor the state after the emission, so the restart emits the
/// final result again instead of losing it (it is emitted only once stream time passes the close, and a committed
/// state past it would no longer hold the window as pending).
#[test]
fn at_least_once_a_lost_final_result_of_a_suppressed_window_is_emitted_again() {
    let c = Cluster::start();
    let dir = tempfile::tempdir().unwrap();
    let app = "lost-final-alo";
    let (input, output) = (format!("{app}-in"), format!("{app}-out"));
    c.create_topic(&input, 1);
    c.create_topic_with(&output, 1, &[("max.message.bytes", "2000")]);
    let topology = || {
        let b = StreamsBuilder::new();
        b.stream(&input)
            .group_by_key()
            .windowed_by(TimeWindows::tumbling(Duration::from_secs(10)))
            .count("w")
            .suppress(Suppressed::UntilWindowCloses)
            .to(&output);
        b.build().unwrap()
    };
    let big = "B".repeat(3000);
    let rec = |key: &str, ts: i64| (0, key.to_string(), "v".to_string(), ts);
    let streams = KafkaStreams::start(topology(), c.config(app, dir.path())).unwrap();
    c.produce(
        &input,
        &[rec(&big, 1_000), rec(&big, 2_000), rec("a", 3_000)],
    );
    await_until("the window's inputs to be committed", || {
        committed_offset(&c.bootstrap, app, &input, 0) == Some(3)
    });
    assert!(
        read_all(&c.bootstrap, &output).is_empty(),
        "{app}: nothing final yet"
    );
    // Input 3 closes the window [0, 10 s): its final results are emitted, that of `big` is refused.
    c.produce(&input, &[rec("c", 15_000)]);
    await_until("the application to fail", || {
        matches!(streams.state(), fjord_streams::StreamsState::Failed(_))
    });
    let _ = streams.close();
    for run in 1..=2 {
        assert_eq!(
            committed_offset(&c.bootstrap, app, &input, 0),
            Some(3),
            "{app} run {run}: the input that closed the window is not committed"
        );
        // The final result of "a" may be refused too (in the same batch) or delivered (again each run).
        let outputs = read_all(&c.bootstrap, &output);
        assert!(
            outputs
                .iter()
                .all(|(k, v)| k.as_deref() == Some(&wkey("a", 0, 10_000)[..])
                    && v.as_deref().and_then(decode_count) == Some(1)),
            "{app} run {run}: {outputs:?}"
        );
        if run < 2 {
            run_until_refused(topology(), c.config(app, dir.path()), &output);
        }
    }
    accept_large_records(&c, &output);
    let streams = KafkaStreams::start(topology(), c.config(app, dir.path())).unwrap();
    await_until("every input to be committed", || {
        committed_offset(&c.bootstrap, app, &input, 0) == Some(4)
    });
    streams.close().unwrap();
    let outputs = read_all(&c.bootstrap, &output);
    let want = BTreeMap::from([(wkey(&big, 0, 10_000), 2), (wkey("a", 0, 10_000), 1)]);
    assert_eq!(table(&outputs), want, "{app}");
    // Repeated, never different: each final result is the window's one count.
    for (k, v) in &outputs {
        let k = k.clone().unwrap_or_default().to_vec();
        assert_eq!(
            Some(&decode_count(v.as_deref().unwrap()).unwrap()),
            want.get(&k),
            "{app}"
        );
    }
    assert_eq!(
        outputs
            .iter()
            .filter(|(k, _)| k.as_deref() == Some(&wkey(&big, 0, 10_000)[..]))
            .count(),
        1,
        "{app}: the refused final result, once taken"
    );
}

/// At least once, after a lost output the run aborts the changelog transaction (the state since the last commit
/// is given up); interactive queries then refuse with a clear error instead of serving the given-up state (here
/// a count of 3 for "a", while the committed state says 2) until a restart restores the committed state.
#[test]
fn interactive_queries_refuse_state_given_up_by_a_changelog_abort() {
    let c = Cluster::start();
    let dir = tempfile::tempdir().unwrap();
    let app = "query-aborted";
    let (input, output) = (format!("{app}-in"), format!("{app}-out"));
    c.create_topic(&input, 1);
    c.create_topic_with(&output, 1, &[("max.message.bytes", "2000")]);
    let topology = || {
        let b = StreamsBuilder::new();
        b.stream(&input).group_by_key().count("n").to(&output);
        b.build().unwrap()
    };
    let big = "B".repeat(3000);
    let rec = |i: i64, key: &str| (0, key.to_string(), format!("v{i}"), 1_000 + i);
    let count_of_a = |streams: &KafkaStreams| {
        streams
            .query_store("n", Some(b"a"))
            .map(|e| e.first().and_then(|e| decode_count(&e.value)))
    };
    let streams = KafkaStreams::start(topology(), c.config(app, dir.path())).unwrap();
    c.produce(&input, &[rec(0, "a"), rec(1, "a")]);
    await_until("the first two inputs to be committed", || {
        committed_offset(&c.bootstrap, app, &input, 0) == Some(2)
    });
    assert_eq!(count_of_a(&streams).unwrap(), Some(2), "{app}");
    c.produce(&input, &[rec(2, &big), rec(3, "a")]);
    await_until("the application to fail", || {
        matches!(streams.state(), fjord_streams::StreamsState::Failed(_))
    });
    assert_eq!(
        committed_offset(&c.bootstrap, app, &input, 0),
        Some(2),
        "{app}"
    );
    match count_of_a(&streams) {
        Err(e) => assert!(
            e.to_string().contains("given up") && e.to_string().contains("restart"),
            "{app}: {e}"
        ),
        Ok(n) => panic!("{app}: a query served {n:?} after the changelog abort"),
    }
    let _ = streams.close();
    // Restarted: the committed state, then the rest once the output is taken.
    accept_large_records(&c, &output);
    let streams = KafkaStreams::start(topology(), c.config(app, dir.path())).unwrap();
    await_until("every input to be committed", || {
        committed_offset(&c.bootstrap, app, &input, 0) == Some(4)
    });
    assert_eq!(count_of_a(&streams).unwrap(), Some(3), "{app}");
    streams.close().unwrap();
}

/// The commit's wait for the outputs' acknowledgements (up to the delivery timeout, against a slow broker) does
/// not hold the lock interactive queries take: a query during it answers at once (from the uncommitted state, as
/// between commits). It used to wait until the flush gave up.
#[test]
fn a_query_does_not_wait_for_a_commit_that_waits_for_a_stalled_broker() {
    let app = "query-stalled";
    let (input, output) = (format!("{app}-in"), format!("{app}-out"));
    let (proxy, c) = stalled_cluster(&output, &[]);
    let dir = tempfile::tempdir().unwrap();
    c.create_topic(&input, 1);
    c.create_topic(&output, 1);
    let b = StreamsBuilder::new();
    b.stream(&input).group_by_key().count("n").to(&output);
    let mut cfg = c.config(app, dir.path());
    // Long enough for the query to come while the commit still waits, also on a loaded machine.
    let delivery_timeout = Duration::from_secs(30);
    cfg.delivery_timeout = delivery_timeout;
    let streams = KafkaStreams::start(b.build().unwrap(), cfg).unwrap();
    let rec = |i: i64| (0, "a".to_string(), format!("v{i}"), 1_000 + i);
    c.produce(&input, &[rec(0)]);
    await_until("the first input to be committed", || {
        committed_offset(&c.bootstrap, app, &input, 0) == Some(1)
    });
    proxy.set_stall(true);
    // No flush while no task has new input: the next one is the commit of the second input.
    let flushes = streams.metrics().output_flushes;
    c.produce(&input, &[rec(1)]);
    await_until("the second input to be processed", || {
        streams.metrics().records_processed >= 2
    });
    // Confirmed, not assumed: the output is held by the proxy, and a commit began to wait for it (after the
    // output was sent: the task has had new input since then).
    await_until("the second input's output to be held", || {
        proxy.held(0) >= 1
    });
    await_until("a commit to wait for the held output", || {
        streams.metrics().output_flushes > flushes
    });
    let asked = Instant::now();
    let got = streams.query_store("n", Some(b"a"));
    let took = asked.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "{app}: the query took {took:?} (the commit waits up to {delivery_timeout:?})"
    );
    let got = got.unwrap();
    assert_eq!(
        got.first().and_then(|e| decode_count(&e.value)),
        Some(2),
        "{app}: {got:?}"
    );
    // The commit was still waiting when the query was answered: it fails the run when it gives up on the output.
    assert_eq!(
        streams.state(),
        fjord_streams::StreamsState::Running,
        "{app}: the commit gave up before the query ({delivery_timeout:?})"
    );
    proxy.set_stall(false);
    let _ = streams.close();
}

/// At least once, when a lost output makes the commit abort the changelog transaction and the broker does not
/// answer the abort (the changelog producer's connection stalled), a query does not wait for the abort (up to the
/// 30 s client timeout, under the engine lock): it is refused at once, the run having failed.
#[test]
fn a_query_does_not_wait_for_a_changelog_abort_that_waits_for_a_stalled_broker() {
    let app = "query-abort-stalled";
    let (input, output) = (format!("{app}-in"), format!("{app}-out"));
    // EndTxn (26): the abort, on the transaction coordinator's connection.
    let (proxy, c) = stalled_cluster(&format!("{app}-n-changelog"), &[26]);
    let dir = tempfile::tempdir().unwrap();
    c.create_topic(&input, 1);
    c.create_topic_with(&output, 1, &[("max.message.bytes", "2000")]);
    let b = StreamsBuilder::new();
    b.stream(&input).group_by_key().count("n").to(&output);
    let mut cfg = c.config(app, dir.path());
    // Every update goes to the changelog as it is made (not at the commit), so the abort has entries to wait for.
    cfg.cache_max_bytes = 0;
    let streams = KafkaStreams::start(b.build().unwrap(), cfg).unwrap();
    let rec = |i: i64, key: &str| (0, key.to_string(), format!("v{i}"), 1_000 + i);
    c.produce(&input, &[rec(0, "a")]);
    await_until("the first input to be committed", || {
        committed_offset(&c.bootstrap, app, &input, 0) == Some(1)
    });
    proxy.set_stall(true);
    // Its output is refused, its changelog entry stalls.
    c.produce(&input, &[rec(1, &"B".repeat(3000))]);
    await_until("the second input to be processed", || {
        streams.metrics().records_processed >= 2
    });
    // The next commit (200 ms interval) meets the refused output and now waits for the abort: confirmed by the
    // proxy holding the EndTxn request, which it holds until the stall ends (the abort waits up to 30 s).
    await_until("the changelog abort to wait for the broker", || {
        proxy.held(26) >= 1
    });
    // Until the query is refused, each answer comes at once.
    let deadline = Instant::now() + WAIT;
    let e = loop {
        let asked = Instant::now();
        let got = streams.query_store("n", Some(b"a"));
        let took = asked.elapsed();
        assert!(
            took < Duration::from_secs(2),
            "{app}: the query took {took:?}"
        );
        match got {
            Err(e) => break e,
            Ok(got) => assert!(
                Instant::now() < deadline,
                "{app}: served {got:?} while the changelog was aborted"
            ),
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(e.to_string().contains("too large"), "{app}: {e}");
    assert!(
        !matches!(streams.state(), fjord_streams::StreamsState::Failed(_)),
        "{app}: the run ended before the query (the abort did not wait)"
    );
    proxy.set_stall(false);
    let _ = streams.close();
}

/// At least once, a failed delivery (an output the broker refuses) fails the run, its next commit giving up what
/// the tasks did since the last one: a query is refused as soon as the delivery report is in, not only once that
/// commit has run. Queries used to serve the state to be given up until then (up to the commit interval plus the
/// delivery timeout; here a commit interval of 2 minutes).
#[test]
fn a_query_is_refused_once_a_delivery_failed_before_the_commit_gives_the_run_up() {
    let c = Cluster::start();
    let dir = tempfile::tempdir().unwrap();
    let app = "query-delivery-failed";
    let (input, output) = (format!("{app}-in"), format!("{app}-out"));
    c.create_topic(&input, 1);
    c.create_topic_with(&output, 1, &[("max.message.bytes", "2000")]);
    let b = StreamsBuilder::new();
    b.stream(&input).group_by_key().count("n").to(&output);
    let mut cfg = c.config(app, dir.path());
    let commit_interval = Duration::from_secs(120);
    cfg.commit_interval = commit_interval;
    let started = Instant::now();
    let streams = KafkaStreams::start(b.build().unwrap(), cfg).unwrap();
    let rec = |i: i64, key: &str| (0, key.to_string(), format!("v{i}"), 1_000 + i);
    c.produce(&input, &[rec(0, "a"), rec(1, &"B".repeat(3000))]);
    await_until("both inputs to be processed", || {
        streams.metrics().records_processed >= 2
    });
    let e = loop {
        match streams.query_store("n", Some(b"a")) {
            Err(e) => break e,
            Ok(got) => assert!(
                started.elapsed() < commit_interval / 2,
                "{app}: served {got:?} after the output was refused"
            ),
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(e.to_string().contains("too large"), "{app}: {e}");
    // Refused before the commit: nothing committed yet, the run not ended.
    assert_eq!(streams.metrics().commits, 0, "{app}");
    assert_eq!(
        streams.state(),
        fjord_streams::StreamsState::Running,
        "{app}"
    );
    assert_eq!(
        committed_offset(&c.bootstrap, app, &input, 0),
        None,
        "{app}"
    );
    // The commit at the end of the run gives it up.
    assert!(streams.close().is_err(), "{app}");
}
