//! End-to-end tests: real broker processes driven by real third-party clients.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;

const CLIENT_TIMEOUT: Duration = Duration::from_secs(180);

#[test]
fn kcat_lists_metadata_pipes_a_file_in_and_reads_it_back_from_beginning() {
    let dir = temp_dir();
    let broker = BrokerProc::start(&dir.path().join("data"), &[]);
    let b = broker.bootstrap.as_str();

    let lines: Vec<String> = (0..2000)
        .map(|i| format!("line {i} with some text"))
        .collect();
    let input = lines.join("\n") + "\n";
    let out = kcat(
        &["-b", b, "-P", "-t", "from-file", "-p", "0"],
        Some(input.as_bytes()),
        CLIENT_TIMEOUT,
    );
    assert!(
        out.status.success(),
        "kcat -P failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = kcat(&["-b", b, "-L", "-t", "from-file"], None, CLIENT_TIMEOUT);
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "kcat -L failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(listing.contains("1 brokers:"), "{listing}");
    assert!(
        listing.contains("topic \"from-file\" with 1 partitions"),
        "{listing}"
    );

    let out = kcat(
        &["-b", b, "-C", "-t", "from-file", "-e", "-o", "beginning"],
        None,
        CLIENT_TIMEOUT,
    );
    assert!(
        out.status.success(),
        "kcat -C failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), input);
}

#[test]
fn hundred_thousand_messages_are_read_back_in_order() {
    let dir = temp_dir();
    // Small segments so the read crosses many segment files.
    let broker = BrokerProc::start(&dir.path().join("data"), &[("log.segment.bytes", "262144")]);
    let b = broker.bootstrap.as_str();
    let input: String = (0..100_000).map(|i| format!("{i}\n")).collect();
    let out = kcat(
        &["-b", b, "-P", "-t", "many", "-p", "0", "-X", "linger.ms=20"],
        Some(input.as_bytes()),
        CLIENT_TIMEOUT,
    );
    assert!(
        out.status.success(),
        "kcat -P failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = kcat(
        &[
            "-b",
            b,
            "-C",
            "-t",
            "many",
            "-e",
            "-o",
            "beginning",
            "-f",
            "%o %s\n",
        ],
        None,
        CLIENT_TIMEOUT,
    );
    assert!(
        out.status.success(),
        "kcat -C failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let mut n = 0;
    for (i, line) in text.lines().enumerate() {
        assert_eq!(
            line,
            format!("{i} {i}"),
            "offset/value mismatch at line {i}"
        );
        n += 1;
    }
    assert_eq!(n, 100_000);
    let segments = std::fs::read_dir(dir.path().join("data/many-0"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "log")
        })
        .count();
    assert!(segments > 2, "expected several segments, found {segments}");
}

#[test]
fn confluent_admin_client_creates_describes_alters_and_deletes_topics() {
    run_client_against_new_broker("confluent_admin.py", &[]);
}

#[test]
fn confluent_producer_and_consumer_round_trip_every_compression() {
    let (_dir, broker) = run_client_against_new_broker("confluent_roundtrip.py", &[]);
    // The broker must store batches as the producer compressed them: read the codec bits of every batch.
    for (codec, id) in [
        ("none", 0),
        ("gzip", 1),
        ("snappy", 2),
        ("lz4", 3),
        ("zstd", 4),
    ] {
        let seg = broker
            .data_dir
            .join(format!("rt-{codec}-0/00000000000000000000.log"));
        let data = std::fs::read(&seg).unwrap();
        let mut codecs = std::collections::BTreeSet::new();
        let mut pos = 0;
        while pos + 61 <= data.len() {
            let len = i32::from_be_bytes(data[pos + 8..pos + 12].try_into().unwrap()) as usize;
            codecs.insert(i16::from_be_bytes(data[pos + 21..pos + 23].try_into().unwrap()) & 7);
            pos += 12 + len;
        }
        assert!(
            codecs.contains(&id),
            "rt-{codec}: stored batches use codecs {codecs:?}, expected {id}"
        );
    }
}

#[test]
fn limits_offsets_delete_records_and_long_poll_with_confluent_kafka() {
    run_client_against_new_broker("confluent_limits.py", &[("message.max.bytes", "100000")]);
}

#[test]
fn topic_level_compression_type_is_accepted_and_batches_are_stored_recompressed() {
    run_client_against_new_broker("confluent_topic_compression.py", &[]);
}

#[test]
fn a_compacted_topic_fails_exactly_its_keyless_records_with_per_record_errors() {
    run_client_against_new_broker("confluent_record_errors.py", &[]);
}

#[test]
fn retention_deletes_old_segments_and_compaction_keeps_the_last_value_per_key() {
    run_client_against_new_broker(
        "confluent_retention.py",
        &[
            ("log.retention.check.interval.ms", "200"),
            ("log.cleaner.backoff.ms", "200"),
        ],
    );
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let dir = temp_dir();
    let broker = BrokerProc::start(&dir.path().join("data"), &[]);
    let mut s = TcpStream::connect(&broker.bootstrap).unwrap();
    // Five requests in one write: ApiVersions v0, Metadata v1 (all topics), ApiVersions v0, Metadata v1,
    // ApiVersions v0, with correlation ids 1..=5.
    let mut batch = Vec::new();
    for id in 1..=5i32 {
        let mut body = Vec::new();
        if id % 2 == 1 {
            body.extend_from_slice(&[0, 18, 0, 0]);
            body.extend_from_slice(&id.to_be_bytes());
            body.extend_from_slice(&[0xff, 0xff]);
        } else {
            body.extend_from_slice(&[0, 3, 0, 1]);
            body.extend_from_slice(&id.to_be_bytes());
            body.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
        }
        batch.extend_from_slice(&(body.len() as i32).to_be_bytes());
        batch.extend_from_slice(&body);
    }
    s.write_all(&batch).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    for id in 1..=5i32 {
        let mut len = [0u8; 4];
        s.read_exact(&mut len).unwrap();
        let mut resp = vec![0u8; i32::from_be_bytes(len) as usize];
        s.read_exact(&mut resp).unwrap();
        assert_eq!(
            i32::from_be_bytes(resp[0..4].try_into().unwrap()),
            id,
            "responses out of order"
        );
    }
}

/// Spawns `fjord start` on free ports with data in `data`; returns the child and its ready line fields.
fn spawn_start(data: &std::path::Path) -> (std::process::Child, String, String) {
    let (child, line) =
        common::start_platform(data, "127.0.0.1:0", "none", std::process::Stdio::null());
    assert!(line.contains(&format!("data={}", data.display())), "{line}");
    let (kafka, http) = (
        common::field(&line, "kafka=").to_string(),
        common::field(&line, "http=").to_string(),
    );
    (child, kafka, http)
}

fn interrupt_and_wait(child: &mut std::process::Child) {
    let _ = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(
                status.success(),
                "fjord start exited with {status} on Ctrl-C"
            );
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "fjord start ignored Ctrl-C"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn fjord_start_serves_kafka_and_metrics_and_ctrl_c_loses_nothing() {
    let dir = temp_dir();
    let data = dir.path().join("data");
    let (mut child, kafka, http) = spawn_start(&data);
    let out = kcat(&["-b", &kafka, "-L"], None, CLIENT_TIMEOUT);
    assert!(out.status.success());
    assert!(http_get(&http, "/metrics").contains("fjord_connections"));
    // acks=1 writes, then Ctrl-C: the clean shutdown must keep every one of them.
    let input: String = (0..500).map(|i| format!("kept-{i}\n")).collect();
    let out = kcat(
        &["-b", &kafka, "-P", "-t", "kept", "-p", "0", "-X", "acks=1"],
        Some(input.as_bytes()),
        CLIENT_TIMEOUT,
    );
    assert!(out.status.success());
    interrupt_and_wait(&mut child);
    assert!(data.join("__meta").exists() && data.join("kept-0/.kafka_cleanshutdown").exists());

    let (mut child, kafka, _) = spawn_start(&data);
    let out = kcat(
        &["-b", &kafka, "-C", "-t", "kept", "-e", "-o", "beginning"],
        None,
        CLIENT_TIMEOUT,
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), input);
    interrupt_and_wait(&mut child);
}

#[test]
fn kafkajs_admin_and_producer_work_and_kcat_reads_what_kafkajs_wrote() {
    let dir = temp_dir();
    let broker = BrokerProc::start(
        &dir.path().join("data"),
        &[("auto.create.topics.enable", "false")],
    );
    let script = workspace_root().join("tests/clients/kafkajs/roundtrip.js");
    let out = run_bounded(
        std::process::Command::new("node")
            .arg(&script)
            .arg(&broker.bootstrap),
        CLIENT_TIMEOUT,
    );
    assert!(
        out.status.success(),
        "kafkajs failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let out = kcat(
        &[
            "-b",
            &broker.bootstrap,
            "-C",
            "-t",
            "js-topic",
            "-e",
            "-o",
            "beginning",
            "-f",
            "%p %k %s %h\n",
        ],
        None,
        CLIENT_TIMEOUT,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(String::from)
        .collect();
    lines.sort();
    let mut want: Vec<String> = (0..200)
        .map(|i| format!("{} k{i} v{i} n={i}", i % 2))
        .collect();
    want.sort();
    assert_eq!(lines, want);
}

#[test]
fn kip848_consumer_groups_split_partitions_and_are_described_and_listed() {
    run_client_against_new_broker(
        "consumer_protocol_admin.py",
        &[
            ("offsets.topic.num.partitions", "4"),
            ("group.consumer.heartbeat.interval.ms", "500"),
        ],
    );
}

#[test]
fn cooperative_sticky_assignment_works_unchanged_with_the_classic_protocol() {
    run_client_against_new_broker(
        "cooperative_sticky.py",
        &[
            ("offsets.topic.num.partitions", "4"),
            ("group.initial.rebalance.delay.ms", "0"),
        ],
    );
}

#[test]
fn idempotent_producer_writes_each_message_once_with_producer_ids_in_the_log() {
    let (_dir, broker) = run_client_against_new_broker("idempotent_producer.py", &[]);
    // The batches on disk carry the producer id and sequences the client sent.
    let data = std::fs::read(broker.data_dir.join("idem-0/00000000000000000000.log")).unwrap();
    let pid = i64::from_be_bytes(data[43..51].try_into().unwrap());
    let first_seq = i32::from_be_bytes(data[53..57].try_into().unwrap());
    assert!(pid >= 0, "producer id {pid}");
    assert_eq!(first_seq, 0);
}

#[test]
fn kafka_python_admin_alters_lists_and_deletes_group_offsets_and_removes_static_members() {
    run_client_against_new_broker(
        "kafka_python_group_admin.py",
        &[
            ("offsets.topic.num.partitions", "4"),
            ("group.initial.rebalance.delay.ms", "0"),
        ],
    );
}

#[test]
fn kafka_python_round_trip_with_auto_created_topic() {
    run_client_against_new_broker("kafka_python_roundtrip.py", &[]);
}

#[test]
fn acks_all_messages_survive_kill_9_of_the_broker() {
    let dir = temp_dir();
    let mut broker = BrokerProc::start(&dir.path().join("data"), &[]);
    let ack_file = dir.path().join("acked.txt");
    let ready_file = dir.path().join("ready");
    let script = workspace_root().join("tests/clients/acks_all_producer.py");
    let mut producer = std::process::Command::new(python())
        .arg(&script)
        .args([&broker.bootstrap, "durable"])
        .arg(&ack_file)
        .arg(&ready_file)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start producer");
    let started = Instant::now();
    while !ready_file.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "producer never got going"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Let acknowledged writes pile up mid-stream, then kill the broker without warning.
    std::thread::sleep(Duration::from_millis(1500));
    broker.kill9();
    std::thread::sleep(Duration::from_millis(500));
    let _ = producer.kill();
    let _ = producer.wait();

    let acked: Vec<u64> = std::fs::read_to_string(&ack_file)
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    assert!(
        acked.len() >= 1000,
        "only {} acknowledged before the kill",
        acked.len()
    );

    broker.restart();
    let out = run_client(
        "read_values.py",
        &[&broker.bootstrap, "durable", "0"],
        CLIENT_TIMEOUT,
    );
    let mut read = Vec::new();
    for (i, line) in out.lines().enumerate() {
        let (offset, value) = line.split_once(' ').unwrap();
        assert_eq!(
            offset.parse::<usize>().unwrap(),
            i,
            "offsets must be dense from 0"
        );
        read.push(value.parse::<u64>().unwrap());
    }
    assert!(read.windows(2).all(|w| w[0] < w[1]), "values out of order");
    let stored: std::collections::HashSet<u64> = read.iter().copied().collect();
    let lost: Vec<u64> = acked
        .iter()
        .copied()
        .filter(|v| !stored.contains(v))
        .collect();
    eprintln!("acknowledged {}, stored {}", acked.len(), read.len());
    assert!(
        lost.is_empty(),
        "{} acknowledged messages lost, first {:?}",
        lost.len(),
        &lost[..lost.len().min(10)]
    );
}

fn raw_request(stream: &mut TcpStream, body: &[u8]) {
    let mut frame = (body.len() as i32).to_be_bytes().to_vec();
    frame.extend_from_slice(body);
    stream.write_all(&frame).unwrap();
}

/// True if the peer closed the connection (EOF or reset) within the timeout.
fn closed_by_peer(stream: &mut TcpStream) -> bool {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buf = [0u8; 64];
    matches!(stream.read(&mut buf), Ok(0) | Err(_))
}

#[test]
fn garbage_frames_close_only_their_connection_and_the_broker_keeps_serving() {
    let dir = temp_dir();
    let broker = BrokerProc::start(
        &dir.path().join("data"),
        &[("socket.request.max.bytes", "1048576")],
    );
    let addr = broker.bootstrap.clone();

    // A client that stays connected throughout and must keep working.
    let mut bystander = TcpStream::connect(&addr).unwrap();

    // Random garbage.
    let mut s = TcpStream::connect(&addr).unwrap();
    raw_request(&mut s, &[0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    assert!(
        closed_by_peer(&mut s),
        "garbage frame must close the connection"
    );

    // Oversized frame length.
    let mut s = TcpStream::connect(&addr).unwrap();
    s.write_all(&(512 * 1024 * 1024i32).to_be_bytes()).unwrap();
    assert!(
        closed_by_peer(&mut s),
        "oversized frame must close the connection"
    );

    // Negative frame length.
    let mut s = TcpStream::connect(&addr).unwrap();
    s.write_all(&(-5i32).to_be_bytes()).unwrap();
    assert!(
        closed_by_peer(&mut s),
        "negative frame length must close the connection"
    );

    // Unknown API key 9999.
    let mut s = TcpStream::connect(&addr).unwrap();
    raw_request(&mut s, &[0x27, 0x0f, 0, 0, 0, 0, 0, 1, 0, 0]);
    assert!(
        closed_by_peer(&mut s),
        "unknown API key must close the connection"
    );

    // Metadata v0 with a truncated body.
    let mut s = TcpStream::connect(&addr).unwrap();
    raw_request(&mut s, &[0, 3, 0, 0, 0, 0, 0, 7, 0, 0, 0, 0, 0, 9]);
    assert!(
        closed_by_peer(&mut s),
        "truncated request must close the connection"
    );

    // Metadata v0 declaring 2^31-1 topics in a 14-byte frame: must be refused before any allocation
    // (this aborted the whole broker before vendor/kafka-protocol's patch).
    let mut s = TcpStream::connect(&addr).unwrap();
    raw_request(
        &mut s,
        &[0, 3, 0, 0, 0, 0, 0, 9, 0xff, 0xff, 0x7f, 0xff, 0xff, 0xff],
    );
    assert!(
        closed_by_peer(&mut s),
        "impossible array length must close the connection"
    );

    // ApiVersions v99: KIP-511 says answer with UNSUPPORTED_VERSION (35) in a v0 response.
    let mut s = TcpStream::connect(&addr).unwrap();
    raw_request(&mut s, &[0, 18, 0, 99, 0, 0, 0, 42, 0, 0]);
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut len = [0u8; 4];
    s.read_exact(&mut len).unwrap();
    let mut resp = vec![0u8; i32::from_be_bytes(len) as usize];
    s.read_exact(&mut resp).unwrap();
    assert_eq!(&resp[0..4], &42i32.to_be_bytes(), "correlation id");
    assert_eq!(&resp[4..6], &35i16.to_be_bytes(), "UNSUPPORTED_VERSION");

    // The bystander connection still gets a proper ApiVersions v0 answer.
    raw_request(&mut bystander, &[0, 18, 0, 0, 0, 0, 0, 7, 0, 0]);
    bystander
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    bystander.read_exact(&mut len).unwrap();
    let mut resp = vec![0u8; i32::from_be_bytes(len) as usize];
    bystander.read_exact(&mut resp).unwrap();
    assert_eq!(&resp[0..4], &7i32.to_be_bytes());
    assert_eq!(&resp[4..6], &0i16.to_be_bytes(), "no error");

    // And a real client works afterwards.
    let out = kcat(&["-b", &addr, "-L"], None, CLIENT_TIMEOUT);
    assert!(
        out.status.success(),
        "kcat -L after garbage: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        broker.log().contains("closing connection"),
        "the broker should log why it closed connections"
    );
}

#[test]
fn idle_connections_are_closed_after_connections_max_idle_ms() {
    let dir = temp_dir();
    let broker = BrokerProc::start(
        &dir.path().join("data"),
        &[("connections.max.idle.ms", "300")],
    );
    let mut s = TcpStream::connect(&broker.bootstrap).unwrap();
    let started = Instant::now();
    assert!(closed_by_peer(&mut s), "idle connection was not closed");
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "closed before the idle timeout"
    );
}

#[test]
fn metrics_endpoint_reports_bytes_messages_and_request_latency() {
    let dir = temp_dir();
    let broker = BrokerProc::start(&dir.path().join("data"), &[]);
    let input: String = (0..100).map(|i| format!("m{i}\n")).collect();
    let out = kcat(
        &["-b", &broker.bootstrap, "-P", "-t", "metered", "-p", "0"],
        Some(input.as_bytes()),
        CLIENT_TIMEOUT,
    );
    assert!(out.status.success());
    let out = kcat(
        &[
            "-b",
            &broker.bootstrap,
            "-C",
            "-t",
            "metered",
            "-e",
            "-o",
            "beginning",
        ],
        None,
        CLIENT_TIMEOUT,
    );
    assert!(out.status.success());
    let text = http_get(broker.http.as_deref().unwrap(), "/metrics");
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let value = |prefix: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no `{prefix}` in metrics:\n{text}"))
    };
    assert_eq!(
        value("fjord_topic_messages_in_total{topic=\"metered\"}"),
        100.0
    );
    assert!(value("fjord_topic_bytes_in_total{topic=\"metered\"}") > 300.0);
    assert!(value("fjord_topic_bytes_out_total{topic=\"metered\"}") > 300.0);
    assert_eq!(
        value("fjord_topic_messages_out_total{topic=\"metered\"}"),
        100.0
    );
    assert!(value("fjord_requests_total{request=\"Produce\"}") >= 1.0);
    assert!(value("fjord_request_latency_seconds_count{request=\"Fetch\"}") >= 1.0);
}

#[test]
fn invalid_config_refuses_to_start_and_names_the_field() {
    let dir = temp_dir();
    let out = run_bounded(
        std::process::Command::new(env!("CARGO_BIN_EXE_fjord")).args([
            "broker",
            "--override",
            &format!("log.dirs={}", dir.path().display()),
            "--override",
            "num.partitions=-3",
        ]),
        Duration::from_secs(30),
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("num.partitions"), "{err}");

    let out = run_bounded(
        std::process::Command::new(env!("CARGO_BIN_EXE_fjord")).args([
            "broker",
            "--override",
            "log.retention.hourz=5",
        ]),
        Duration::from_secs(30),
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("log.retention.hourz"));
}

#[test]
fn an_io_error_in_the_log_dir_holding_metadata_stops_the_broker_with_status_1() {
    let dir = temp_dir();
    let data = dir.path().join("data");
    let mut broker = BrokerProc::start(&data, &[("log.segment.bytes", "200")]);
    let produce = |b: &str, n: usize| {
        let input: String = (0..n).map(|i| format!("record number {i}\n")).collect();
        kcat(
            &["-b", b, "-P", "-t", "t", "-p", "0"],
            Some(input.as_bytes()),
            CLIENT_TIMEOUT,
        )
    };
    assert!(produce(&broker.bootstrap, 5).status.success());
    // The disk loses the partition directory: the next segment roll (segment.bytes 200) cannot create its file
    // (ENOTDIR), a real I/O error in the first log directory, the one holding __meta.
    let part = data.join("t-0");
    assert!(
        part.is_dir(),
        "auto-created topic t lives in {}",
        data.display()
    );
    std::fs::remove_dir_all(&part).unwrap();
    std::fs::write(&part, b"not a directory").unwrap();
    let _ = produce(&broker.bootstrap, 50);
    let status = broker
        .wait_exit(Duration::from_secs(60))
        .expect("the broker stops on its own");
    assert_eq!(status.code(), Some(1), "{}", broker.log());
    let log = broker.log();
    assert!(log.contains("OFFLINE"), "{log}");
    assert!(log.contains(&data.display().to_string()), "{log}");
    assert!(log.contains("stopping the broker"), "{log}");
}

#[test]
fn topics_and_data_survive_a_clean_restart() {
    let dir = temp_dir();
    let mut broker = BrokerProc::start(&dir.path().join("data"), &[("num.partitions", "3")]);
    let input: String = (0..300).map(|i| format!("r{i}\n")).collect();
    let out = kcat(
        &["-b", &broker.bootstrap, "-P", "-t", "kept"],
        Some(input.as_bytes()),
        CLIENT_TIMEOUT,
    );
    assert!(out.status.success());
    broker.stop();
    broker.restart();
    let out = kcat(
        &["-b", &broker.bootstrap, "-L", "-t", "kept"],
        None,
        CLIENT_TIMEOUT,
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("with 3 partitions"));
    let out = kcat(
        &[
            "-b",
            &broker.bootstrap,
            "-C",
            "-t",
            "kept",
            "-e",
            "-o",
            "beginning",
        ],
        None,
        CLIENT_TIMEOUT,
    );
    let mut got: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(String::from)
        .collect();
    got.sort();
    let mut want: Vec<String> = (0..300).map(|i| format!("r{i}")).collect();
    want.sort();
    assert_eq!(got, want);
}

#[test]
fn running_out_of_open_files_fails_those_partitions_and_the_broker_keeps_serving() {
    // An EMFILE used to count as a fault of the disk: the log directory holding the metadata went offline and
    // the broker stopped (and stopped again after every restart on the same data).
    let dir = temp_dir();
    let data = dir.path().join("data");
    let broker = BrokerProc::start_with_nofile(&data, &[], Some(300));
    let b = broker.bootstrap.clone();
    let input = b"before\n";
    let out = kcat(
        &["-b", &b, "-P", "-t", "small", "-p", "0"],
        Some(input),
        CLIENT_TIMEOUT,
    );
    assert!(out.status.success(), "{}", broker.log());
    // 400 partitions need more descriptors than the process has left.
    let _ = fjord(
        &b,
        &["topics", "create", "big", "--partitions", "400"],
        None,
    );
    let log = broker.log();
    assert!(log.contains("Too many open files"), "{log}");
    assert!(log.contains("ulimit -n"), "the log says what to do: {log}");
    assert!(!log.contains("stopping the broker"), "{log}");
    // The broker still answers and its other partitions still take writes and serve reads.
    let out = kcat(
        &["-b", &b, "-P", "-t", "small", "-p", "0"],
        Some(b"after\n"),
        CLIENT_TIMEOUT,
    );
    assert!(out.status.success(), "{}", broker.log());
    let out = kcat(
        &[
            "-b",
            &b,
            "-C",
            "-t",
            "small",
            "-p",
            "0",
            "-o",
            "beginning",
            "-e",
            "-q",
        ],
        None,
        CLIENT_TIMEOUT,
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "before\nafter\n");
}

#[test]
fn kafka_python_admin_describes_log_dirs_and_topic_partitions_and_elects_leaders() {
    let dir = temp_dir();
    let broker = BrokerProc::start(&dir.path().join("data"), &[]);
    let log_dir = broker.data_dir.display().to_string();
    let out = run_client(
        "kafka_python_cluster_admin.py",
        &[&broker.bootstrap, &log_dir],
        Duration::from_secs(180),
    );
    assert!(out.lines().any(|l| l.starts_with("ok")), "{out}");
}
