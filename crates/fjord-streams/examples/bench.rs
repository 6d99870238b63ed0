//! Throughput of the streams library: a stateless filter/projection and a windowed count (fjall stores,
//! changelog on, final results only), over `--events N` 100-byte events already in a topic.
//!
//!     cargo run --release -p fjord-streams --example bench -- --events 1000000 [--bootstrap host:port]
//!
//! Without `--bootstrap` it starts a Fjord broker in this process (data in a temporary directory). The time
//! of a run is from `KafkaStreams::start` until every input record is processed and the final commit (producer
//! flush, changelog writes, offsets) is done.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use fjord_streams::{
    KafkaStreams, StateStores, StreamsBuilder, StreamsConfig, Suppressed, TimeWindows, Topology,
};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

const PARTITIONS: i32 = 2;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let events: u64 = arg("--events").map_or(1_000_000, |v| v.parse().expect("--events N"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (_broker, bootstrap) = match arg("--bootstrap") {
        Some(b) => (None, b),
        None => {
            let mut props = BTreeMap::new();
            props.insert(
                "listeners".to_string(),
                "PLAINTEXT://127.0.0.1:0".to_string(),
            );
            props.insert(
                "log.dirs".to_string(),
                dir.path().join("broker").display().to_string(),
            );
            props.insert("offsets.topic.num.partitions".to_string(), "2".to_string());
            props.insert(
                "group.initial.rebalance.delay.ms".to_string(),
                "0".to_string(),
            );
            let cfg = fjord_broker::config::BrokerConfig::from_properties(props).unwrap();
            let b = rt.block_on(fjord_broker::Broker::start(cfg)).unwrap();
            let addr = b.local_addr().to_string();
            (Some(b), addr)
        }
    };
    let run = format!("{}", std::process::id());
    let input = format!("bench-in-{run}");
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()
        .unwrap();
    let topics: Vec<String> = ["", "-projected", "-counts"]
        .iter()
        .map(|s| format!("{input}{s}"))
        .collect();
    let news: Vec<NewTopic> = topics
        .iter()
        .map(|t| NewTopic::new(t, PARTITIONS, TopicReplication::Fixed(1)))
        .collect();
    for r in rt
        .block_on(admin.create_topics(news.iter(), &AdminOptions::new()))
        .unwrap()
    {
        r.expect("create topic");
    }

    let t = Instant::now();
    produce(&bootstrap, &input, events);
    println!(
        "produced {events} events of 100 bytes in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    // Stateless: keep 3 of 4 pages, project the first 32 bytes.
    let b = StreamsBuilder::new();
    b.stream(&input)
        .filter(|r| r.value_bytes().get(5) != Some(&b'3'))
        .map_values(|r| r.value.as_ref().map(|v| v.slice(..32.min(v.len()))))
        .to(&topics[1]);
    measure(
        "filter/projection",
        b.build().unwrap(),
        &bootstrap,
        &run,
        "stateless",
        dir.path(),
        events,
    );

    // Windowed count: 1-minute tumbling windows per user, fjall, changelog, final results.
    let b = StreamsBuilder::new();
    b.stream(&input)
        .group_by_key()
        .windowed_by(TimeWindows::tumbling(Duration::from_secs(60)))
        .count("bench-counts")
        .suppress(Suppressed::UntilWindowCloses)
        .to(&topics[2]);
    measure(
        "windowed count (fjall + changelog)",
        b.build().unwrap(),
        &bootstrap,
        &run,
        "windowed",
        dir.path(),
        events,
    );
}

fn produce(bootstrap: &str, topic: &str, events: u64) {
    let p: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "20")
        .set("batch.size", "1000000")
        .set("compression.type", "lz4")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .unwrap();
    let base = 1_700_000_000_000i64;
    let mut value = [b'x'; 100];
    for i in 0..events {
        let key = format!("user-{:05}", i % 10_000);
        let page = format!("page={} ", i % 4);
        value[..page.len()].copy_from_slice(page.as_bytes());
        let mut rec = BaseRecord::to(topic)
            .partition((i % PARTITIONS as u64) as i32)
            .key(key.as_bytes())
            .payload(&value[..])
            .timestamp(base + i as i64);
        loop {
            match p.send(rec) {
                Ok(()) => break,
                Err((_, r)) => {
                    p.poll(Duration::from_millis(5));
                    rec = r;
                }
            }
        }
    }
    p.flush(Duration::from_secs(120)).unwrap();
}

fn measure(
    name: &str,
    topo: Topology,
    bootstrap: &str,
    run: &str,
    app: &str,
    dir: &std::path::Path,
    events: u64,
) {
    let mut cfg = StreamsConfig::new(&format!("bench-{app}-{run}"), bootstrap);
    cfg.state_stores = StateStores::Fjall;
    cfg.state_dir = dir.join(app);
    cfg.commit_interval = Duration::from_secs(1);
    let t = Instant::now();
    let streams = KafkaStreams::start(topo, cfg).unwrap();
    let deadline = Instant::now() + Duration::from_secs(1800);
    while streams.metrics().records_processed < events {
        assert!(Instant::now() < deadline, "{name}: not done in 30 minutes");
        std::thread::sleep(Duration::from_millis(20));
    }
    let m = streams.metrics();
    streams.close().unwrap();
    let secs = t.elapsed().as_secs_f64();
    println!(
        "{name}: {events} events in {secs:.2} s = {:.0} events/s ({} records written, {} commits)",
        events as f64 / secs,
        m.records_sent,
        m.commits
    );
}
