//! End-to-end tests of the data path of the command line (`fjord produce`, `fjord consume`): nothing the
//! user sent or asked for is lost, Kafka-tool flags work, errors say what to do.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;

/// A `fjord` process running in the background, its stdout lines collected by a thread.
struct Background {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Background {
    fn start(bootstrap: &str, args: &[&str]) -> Background {
        let mut child = Command::new(env!("CARGO_BIN_EXE_fjord"))
            .args(args)
            .env("FJORD_BOOTSTRAP_SERVER", bootstrap)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn fjord");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        Background { child, lines }
    }

    /// The next `n` lines of output, waiting at most `timeout` in all.
    fn read_lines(&self, n: usize, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        while out.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => out.push(l),
                Err(_) => panic!(
                    "only {} of {n} lines within {timeout:?}: {out:?}",
                    out.len()
                ),
            }
        }
        out
    }

    fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits (bounded) for the exit; kills the process if it does not exit in time.
    fn wait(mut self, timeout: Duration) -> Output {
        let deadline = Instant::now() + timeout;
        while self.child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("fjord did not exit within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child.wait_with_output().unwrap()
    }
}

fn sorted_lines(s: &str) -> Vec<String> {
    let mut v: Vec<String> = s.lines().map(str::to_string).collect();
    v.sort();
    v
}

fn produce_to(b: &str, topic: &str, partition: i32, lines: &str) {
    ok(&fjord(
        b,
        &["produce", topic, "--partition", &partition.to_string()],
        Some(lines.as_bytes()),
    ));
}

#[test]
fn a_group_commits_the_position_of_every_assigned_partition_not_only_those_it_printed_from() {
    let dir = temp_dir();
    let broker = BrokerProc::start(&dir.path().join("data"), &[]);
    let b = &broker.bootstrap;
    ok(&fjord(b, &["topics", "create", "three", "-p", "3"], None));
    produce_to(b, "three", 0, "first\n");
    let out = ok(&fjord(
        b,
        &[
            "consume",
            "three",
            "--group",
            "g",
            "--from-beginning",
            "--exit-at-end",
        ],
        None,
    ));
    assert_eq!(out, "first\n");
    // The issue's repro: partitions 1 and 2 had nothing to print; their position (0) must have been
    // committed, or this run starts them at `latest` and skips their records.
    for p in 0..3 {
        produce_to(b, "three", p, &format!("second-{p}\n"));
    }
    let out = fjord(
        b,
        &["consume", "three", "--group", "g", "--exit-at-end"],
        None,
    );
    assert_eq!(
        sorted_lines(&ok(&out)),
        ["second-0", "second-1", "second-2"],
        "{}",
        stderr(&out)
    );
    // And nothing more the next time.
    let out = ok(&fjord(
        b,
        &["consume", "three", "--group", "g", "--exit-at-end"],
        None,
    ));
    assert_eq!(out, "");
}

/// Review finding: records that reached only the output buffer were committed, so a full disk (or a crash
/// before the flush) lost them for the group. Only what was flushed without error is committed now.
#[test]
fn a_group_never_commits_records_its_output_could_not_take() {
    let dir = temp_dir();
    let broker = BrokerProc::start(&dir.path().join("data"), &[]);
    let b = &broker.bootstrap;
    ok(&fjord(b, &["topics", "create", "full", "-p", "1"], None));
    let lines: String = (0..1000).map(|i| format!("line-{i}\n")).collect();
    produce_to(b, "full", 0, &lines);
    let dev_full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .expect("/dev/full");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fjord"));
    cmd.args([
        "consume",
        "full",
        "--group",
        "g",
        "--from-beginning",
        "--max-messages",
        "1000",
    ])
    .env("FJORD_BOOTSTRAP_SERVER", b)
    .stdin(Stdio::null())
    .stdout(dev_full)
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn fjord");
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("consume into /dev/full did not finish within 60 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().expect("output");
    assert_ne!(
        out.status.code(),
        Some(0),
        "a failed write is a failure: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("writing output failed"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The group committed nothing past what reached the output: everything is read again.
    let out = ok(&fjord(
        b,
        &["consume", "full", "--group", "g", "--exit-at-end"],
        None,
    ));
    assert_eq!(out.lines().count(), 1000, "{out}");
}

#[test]
fn sigterm_stops_a_group_consumer_like_ctrl_c_committing_and_printing_the_summary() {
    let dir = temp_dir();
    let broker = BrokerProc::start(&dir.path().join("data"), &[]);
    let b = &broker.bootstrap;
    ok(&fjord(b, &["topics", "create", "term", "-p", "3"], None));
    for p in 0..3 {
        produce_to(b, "term", p, &format!("old-{p}\n"));
    }
    for (sig, group) in [("TERM", "g-term"), ("INT", "g-int")] {
        let consumer = Background::start(
            b,
            &["consume", "term", "--group", group, "--from-beginning"],
        );
        let got = consumer.read_lines(3, Duration::from_secs(60));
        assert_eq!(sorted_lines(&got.join("\n")), ["old-0", "old-1", "old-2"]);
        consumer.signal(sig);
        let out = consumer.wait(Duration::from_secs(30));
        assert_eq!(out.status.code(), Some(0), "SIG{sig}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("Processed a total of 3 messages"),
            "SIG{sig}: {}",
            stderr(&out)
        );
    }
    // The positions were committed: the next members of both groups see only what is new.
    for p in 0..3 {
        produce_to(b, "term", p, &format!("new-{p}\n"));
    }
    for group in ["g-term", "g-int"] {
        let out = ok(&fjord(
            b,
            &["consume", "term", "--group", group, "--exit-at-end"],
            None,
        ));
        assert_eq!(sorted_lines(&out), ["new-0", "new-1", "new-2"], "{group}");
    }
}

#[test]
fn consume_piped_with_stderr_into_a_reader_that_stops_early_ends_quietly() {
    let dir = temp_dir();
    let broker = BrokerProc::start(&dir.path().join("data"), &[]);
    let b = &broker.bootstrap;
    ok(&fjord(b, &["topics", "create", "many", "-p", "1"], None));
    let input: String = (0..50_000).map(|i| format!("message {i}\n")).collect();
    ok(&fjord(b, &["produce", "many"], Some(input.as_bytes())));
    // `2>&1 | head -1`: stdout and stderr both go into a pipe that closes after the first line.
    let script = format!(
        "\"{}\" consume many --from-beginning --exit-at-end 2>&1 | head -1; echo \"status=${{PIPESTATUS[0]}}\"",
        env!("CARGO_BIN_EXE_fjord")
    );
    let out = run_bounded(
        Command::new("bash")
            .args(["-c", &script])
            .env("FJORD_BOOTSTRAP_SERVER", b),
        Duration::from_secs(60),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text.lines().collect::<Vec<_>>(),
        ["message 0", "status=141"],
        "{text}{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
}

fn consume_all(b: &str, topic: &str) -> String {
    ok(&fjord(
        b,
        &["consume", topic, "--from-beginning", "--exit-at-end"],
        None,
    ))
}

#[test]
fn a_produce_that_hits_a_bad_line_delivers_every_line_before_it_and_says_exactly_what_was_delivered(
) {
    let dir = temp_dir();
    let broker = BrokerProc::start(&dir.path().join("data"), &[]);
    let b = &broker.bootstrap;
    ok(&fjord(b, &["topics", "create", "sizes", "-p", "1"], None));
    let good: String = (0..20_000).map(|i| format!("good {i}\n")).collect();
    let mut input = good.clone().into_bytes();
    input.extend(std::iter::repeat_n(b'x', 2_000_000));
    input.extend_from_slice(b"\nafter 1\nafter 2\n");
    let out = fjord(b, &["produce", "sizes"], Some(&input));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(
            "delivered 20,000 of 20,001 lines; line 20,001: 2,000,000 bytes exceeds the topic's max.message.bytes of 1,048,588"
        ) && stderr(&out).contains("fjord topics alter sizes --config max.message.bytes="),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        consume_all(b, "sizes"),
        good,
        "every line before the bad one"
    );

    // --skip-errors goes on and lists the line it skipped.
    let out = fjord(b, &["produce", "sizes", "--skip-errors"], Some(&input));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("line 20,001 skipped: 2,000,000 bytes exceeds")
            && stderr(&out).contains("delivered 20,002 of 20,003 lines; 1 skipped"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        consume_all(b, "sizes"),
        format!("{good}{good}after 1\nafter 2\n")
    );
    // A line without the key separator is such a line too.
    let out = fjord(
        b,
        &["produce", "sizes", "--key-separator", ":"],
        Some(b"k:1\nk:2\nno separator\nk:4\n"),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("delivered 2 of 3 lines; line 3: no key separator `:`"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn the_topics_max_message_bytes_limits_a_message_not_the_clients_smaller_default() {
    let dir = temp_dir();
    let broker = BrokerProc::start(&dir.path().join("data"), &[]);
    let b = &broker.bootstrap;
    // Larger than librdkafka's default message.max.bytes (1,000,000): the topic allows it.
    ok(&fjord(
        b,
        &[
            "topics",
            "create",
            "large",
            "--config",
            "max.message.bytes=3000000",
        ],
        None,
    ));
    let mut line = vec![b'y'; 2_500_000];
    line.push(b'\n');
    let out = fjord(b, &["produce", "large"], Some(&line));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(consume_all(b, "large").len(), line.len());
    // Smaller than one default batch: batches of many small messages must not exceed it.
    ok(&fjord(
        b,
        &[
            "topics",
            "create",
            "small",
            "--config",
            "max.message.bytes=2000",
        ],
        None,
    ));
    let lines: String = (0..200)
        .map(|i| format!("{i:04}{}\n", "z".repeat(600)))
        .collect();
    let out = fjord(
        b,
        &["produce", "small", "--linger-ms", "50"],
        Some(lines.as_bytes()),
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(consume_all(b, "small"), lines);
    // The boundary is the broker's: a batch of one record with a 1,930-byte value is 2,000 bytes (61 of
    // batch header, 9 of record framing), one byte more is refused before it is sent.
    ok(&fjord(
        b,
        &["produce", "small"],
        Some("w".repeat(1930).as_bytes()),
    ));
    let out = fjord(b, &["produce", "small"], Some("w".repeat(1931).as_bytes()));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("line 1: 1,931 bytes (2,001 with the record's framing)"),
        "{}",
        stderr(&out)
    );
    let out = fjord(b, &["produce", "small"], Some("w".repeat(1990).as_bytes()));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(
            "line 1: 1,990 bytes (2,060 with the record's framing) exceeds the topic's max.message.bytes of 2,000"
        ),
        "{}",
        stderr(&out)
    );
}

#[test]
fn ctrl_c_stops_produce_reading_delivers_what_was_read_and_prints_the_count() {
    use std::io::Write;
    let dir = temp_dir();
    let broker = BrokerProc::start(&dir.path().join("data"), &[]);
    let b = &broker.bootstrap;
    ok(&fjord(b, &["topics", "create", "typed", "-p", "1"], None));
    // A long linger keeps the messages in the client for a while; stdin stays open, as at a terminal.
    let mut child = Command::new(env!("CARGO_BIN_EXE_fjord"))
        .args(["produce", "typed", "--linger-ms", "5000"])
        .env("FJORD_BOOTSTRAP_SERVER", b)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let lines: String = (0..1000).map(|i| format!("typed {i}\n")).collect();
    stdin.write_all(lines.as_bytes()).unwrap();
    stdin.flush().unwrap();
    // Time to start and read the lines (a single pipe read); the signal comes while stdin is still open.
    std::thread::sleep(Duration::from_secs(5));
    let bg = Background {
        child,
        lines: mpsc::channel().1,
    };
    bg.signal("INT");
    let out = bg.wait(Duration::from_secs(60));
    drop(stdin);
    assert_eq!(
        out.status.code(),
        Some(130),
        "interrupted before the end of its input: 128 + SIGINT, as a shell reports it; {}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("interrupted: delivered 1,000 of 1,000 lines read"),
        "{}",
        stderr(&out)
    );
    assert_eq!(consume_all(b, "typed"), lines);
}

#[test]
fn bad_arguments_exit_2_with_our_message_and_negative_numbers_are_values() {
    let dir = temp_dir();
    let broker = BrokerProc::start(&dir.path().join("data"), &[]);
    let b = &broker.bootstrap;
    ok(&fjord(b, &["topics", "create", "args", "-p", "3"], None));
    let cases: &[(&[&str], &str)] = &[
        (
            &["produce", "args", "--key-separator", ""],
            "--key-separator must not be empty",
        ),
        (
            &["produce", "args", "-X", "acks=banana"],
            "-X acks=banana: `banana` is not a valid value for `acks`",
        ),
        (
            &["produce", "args", "-X", "no.such.property=1"],
            "`no.such.property` is not a client property",
        ),
        (
            &["produce", "args", "-X", "linger.ms"],
            "-X `linger.ms` is not KEY=VALUE",
        ),
        (
            &[
                "produce",
                "args",
                "--producer-property",
                "linger.ms=99999999",
            ],
            "is not a valid value for `linger.ms` (allowed range",
        ),
        (&["produce", "args", "--linger-ms", "1000000"], "1000000"),
        (
            &["produce", "args", "--partition", "-1"],
            "--partition must be 0 or more",
        ),
        (
            &["produce", "args", "--header", "nokey"],
            "--header `nokey` is not KEY=VALUE",
        ),
        (
            &["produce", "args", "--property", "parse.headers=true"],
            "not a reader property",
        ),
        (
            &["consume", "args", "--offset", "soon"],
            "--offset soon: expected earliest, latest",
        ),
        (&["consume", "args", "--offset", "@-5"], "before 1970"),
        (
            &[
                "consume",
                "args",
                "--from-timestamp",
                "1969-12-31T23:00:00Z",
            ],
            "before 1970",
        ),
        (
            &["consume", "args", "--partition", "-3"],
            "--partition must be 0 or more",
        ),
        (
            &["consume", "args", "--property", "print.everything=true"],
            "not a formatter property",
        ),
        (
            &[
                "consume",
                "args",
                "--consumer-property",
                "fetch.wait.max.ms=x",
            ],
            "is not a valid value for `fetch.wait.max.ms`",
        ),
        (
            &["consume", "args", "--include", "(unclosed"],
            "--include `(unclosed` is not a regular expression",
        ),
        (&["consume"], "name a topic"),
        (
            &["produce", "args", "-X", "linger.ms=200000"],
            "cannot create a producer with these properties: `message.timeout.ms` must be greater than `linger.ms`",
        ),
        (
            &["consume", "args", "-b", "no-port-here"],
            "--bootstrap-server `no-port-here` is not HOST:PORT",
        ),
    ];
    for (args, want) in cases {
        let out = fjord(b, args, Some(b"x\n"));
        let err = stderr(&out);
        assert_eq!(
            out.status.code(),
            Some(2),
            "fjord {}: {err}",
            args.join(" ")
        );
        assert!(
            err.contains(want),
            "fjord {}: want `{want}` in {err}",
            args.join(" ")
        );
        for raw in [
            "panicked",
            "Local:",
            "InvalidArgument",
            "Admin operation",
            "librdkafka:",
        ] {
            assert!(
                !err.contains(raw),
                "fjord {}: raw `{raw}` in {err}",
                args.join(" ")
            );
        }
    }
    // Negative numbers are values, not flags.
    ok(&fjord(
        b,
        &["produce", "args", "--acks", "-1", "-p", "1"],
        Some(b"one\ntwo\nthree\n"),
    ));
    let out = ok(&fjord(
        b,
        &[
            "consume",
            "args",
            "--offset",
            "-2",
            "-p",
            "1",
            "--exit-at-end",
        ],
        None,
    ));
    assert_eq!(out, "two\nthree\n");
    // A partition the topic does not have: the same message for produce as for consume.
    for cmd in ["produce", "consume"] {
        let out = fjord(
            b,
            &[cmd, "args", "--partition", "5", "--max-messages", "1"]
                [..if cmd == "produce" { 4 } else { 6 }],
            Some(b"x\n"),
        );
        assert_eq!(out.status.code(), Some(1), "{cmd}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("topic `args` has no partition 5 (it has 3)"),
            "{cmd}: {}",
            stderr(&out)
        );
    }
}

#[test]
fn an_unreachable_broker_fails_fast_with_its_own_message_per_cause() {
    // Nobody listens: refused at once, not after the 10 s request timeout.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    for cmd in [&["consume", "t"][..], &["produce", "t"][..]] {
        let started = Instant::now();
        let out = fjord(&dead, cmd, Some(b"x\n"));
        assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "took {:?}",
            started.elapsed()
        );
        assert!(
            stderr(&out).contains(&format!(
                "cannot reach a broker at {dead}: connection refused"
            )) && stderr(&out).contains("fjord start"),
            "{}",
            stderr(&out)
        );
    }
    let out = fjord("no-such-host.invalid:9092", &["consume", "t"], None);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("cannot resolve the broker host `no-such-host.invalid`"),
        "{}",
        stderr(&out)
    );
    let out = fjord("127.0.0.1:99999", &["produce", "t"], Some(b"x\n"));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("is not HOST:PORT"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_broker_that_goes_away_is_reported_in_one_clear_line_every_few_seconds_and_raw_only_with_verbose(
) {
    let dir = temp_dir();
    let mut broker = BrokerProc::start(&dir.path().join("data"), &[]);
    let b = broker.bootstrap.clone();
    ok(&fjord(&b, &["topics", "create", "gone", "-p", "1"], None));
    produce_to(&b, "gone", 0, "before\n");
    let quiet = Background::start(&b, &["consume", "gone", "--from-beginning"]);
    let verbose = Background::start(&b, &["consume", "gone", "--from-beginning", "--verbose"]);
    assert_eq!(quiet.read_lines(1, Duration::from_secs(60)), ["before"]);
    assert_eq!(verbose.read_lines(1, Duration::from_secs(60)), ["before"]);
    broker.kill9();
    std::thread::sleep(Duration::from_secs(8));
    quiet.signal("INT");
    verbose.signal("INT");
    let (quiet, verbose) = (
        quiet.wait(Duration::from_secs(30)),
        verbose.wait(Duration::from_secs(30)),
    );
    let err = stderr(&quiet);
    let notices = err
        .lines()
        .filter(|l| l.contains(&format!("broker {b} unreachable, retrying...")))
        .count();
    assert!((1..=2).contains(&notices), "one line per 5 s: {err}");
    for raw in [
        "librdkafka",
        "Local:",
        "BrokerTransportFailure",
        "WARN",
        "ERROR",
    ] {
        assert!(!err.contains(raw), "raw `{raw}` reached the user: {err}");
    }
    assert!(err.contains("Processed a total of 1 messages"), "{err}");
    assert!(
        stderr(&verbose).contains("librdkafka"),
        "--verbose shows librdkafka's lines: {}",
        stderr(&verbose)
    );
}

#[test]
fn consume_speaks_kafka_tool_flags_several_topics_include_last_n_and_timestamps() {
    let dir = temp_dir();
    let broker = BrokerProc::start(&dir.path().join("data"), &[]);
    let b = &broker.bootstrap;
    for t in ["alpha-1", "alpha-2", "beta"] {
        ok(&fjord(b, &["topics", "create", t, "-p", "2"], None));
    }
    for t in ["alpha-1", "alpha-2", "beta"] {
        for p in 0..2 {
            produce_to(b, t, p, &format!("{t}/{p}/0\n{t}/{p}/1\n{t}/{p}/2\n"));
        }
    }
    let all = |t: &str| -> Vec<String> {
        (0..2)
            .flat_map(|p| (0..3).map(move |i| format!("{t}/{p}/{i}")))
            .collect()
    };
    let alphas: Vec<String> = {
        let mut v = [all("alpha-1"), all("alpha-2")].concat();
        v.sort();
        v
    };
    // Several topics, as positionals, as --topic flags, or by --include.
    for args in [
        &["consume", "alpha-1", "alpha-2", "-e", "-o", "earliest"][..],
        &[
            "consume",
            "--topic",
            "alpha-1",
            "-t",
            "alpha-2",
            "-e",
            "--from-beginning",
        ][..],
        &["consume", "--include", "alpha-.*", "-e", "--from-beginning"][..],
    ] {
        assert_eq!(sorted_lines(&ok(&fjord(b, args, None))), alphas, "{args:?}");
    }
    // The last N of each partition.
    assert_eq!(
        sorted_lines(&ok(&fjord(b, &["consume", "beta", "-o", "-1", "-e"], None))),
        ["beta/0/2", "beta/1/2"]
    );
    // An offset; latest prints nothing old.
    assert_eq!(
        ok(&fjord(
            b,
            &["consume", "beta", "-p", "1", "-o", "1", "-e"],
            None
        )),
        "beta/1/1\nbeta/1/2\n"
    );
    assert_eq!(
        ok(&fjord(b, &["consume", "beta", "-o", "latest", "-e"], None)),
        ""
    );
    // From a time: only what was produced after it.
    std::thread::sleep(Duration::from_millis(50));
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        .to_string();
    std::thread::sleep(Duration::from_millis(50));
    produce_to(b, "beta", 0, "beta/0/late\n");
    for args in [
        &["consume", "beta", "--from-timestamp", &now_ms, "-e"][..],
        &["consume", "beta", "--offset", &format!("@{now_ms}"), "-e"][..],
    ] {
        assert_eq!(ok(&fjord(b, args, None)), "beta/0/late\n", "{args:?}");
    }
    // kafka-console-consumer's formatter properties and client properties.
    let out = ok(&fjord(
        b,
        &[
            "consume",
            "beta",
            "-p",
            "0",
            "-o",
            "-1",
            "-e",
            "--property",
            "print.key=true",
            "--property",
            "key.separator=|",
            "--property",
            "print.partition=true",
            "--property",
            "null.literal=<none>",
            "--consumer-property",
            "fetch.wait.max.ms=10",
        ],
        None,
    ));
    assert_eq!(out, "Partition:0|<none>|beta/0/late\n");
    assert_eq!(
        ok(&fjord(
            b,
            &[
                "consume",
                "beta",
                "-p",
                "0",
                "-o",
                "-1",
                "-e",
                "--print-value",
                "false",
                "--print-offset"
            ],
            None
        )),
        "Offset:3\n"
    );
    // A group reading several topics commits all of them.
    let first = ok(&fjord(
        b,
        &[
            "consume",
            "--include",
            "alpha-.*",
            "-g",
            "multi",
            "-e",
            "--from-beginning",
        ],
        None,
    ));
    assert_eq!(sorted_lines(&first), alphas);
    produce_to(b, "alpha-2", 1, "alpha-2/1/new\n");
    assert_eq!(
        ok(&fjord(
            b,
            &["consume", "alpha-1", "alpha-2", "-g", "multi", "-e"],
            None
        )),
        "alpha-2/1/new\n"
    );
}

#[test]
fn produce_speaks_kafka_tool_flags_json_lines_tombstones_and_round_trips_consume_json() {
    let dir = temp_dir();
    let broker = BrokerProc::start(&dir.path().join("data"), &[]);
    let b = &broker.bootstrap;
    ok(&fjord(b, &["topics", "create", "src", "-p", "2"], None));
    ok(&fjord(b, &["topics", "create", "copy", "-p", "2"], None));
    let input = concat!(
        r#"{"key":"k1","value":"v1","headers":{"origin":"test","empty":null},"partition":1}"#,
        "\n",
        r#"{"key":"k1","value":null,"partition":1}"#,
        "\n",
        r#"{"value":{"nested":[1,2]},"partition":0}"#,
        "\n",
        r#"{"key_hex":"00ff","value":"binary key","partition":0}"#,
        "\n",
    );
    ok(&fjord(
        b,
        &["produce", "--topic", "src", "--format", "json"],
        Some(input.as_bytes()),
    ));
    let json = ok(&fjord(
        b,
        &[
            "consume",
            "src",
            "--format",
            "json",
            "-e",
            "--from-beginning",
        ],
        None,
    ));
    let records: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let find = |p: i64, o: i64| {
        records
            .iter()
            .find(|r| r["partition"] == p && r["offset"] == o)
            .unwrap_or_else(|| panic!("no {p}/{o} in {json}"))
            .clone()
    };
    let r = find(1, 0);
    assert_eq!(
        (r["key"].as_str(), r["value"].as_str()),
        (Some("k1"), Some("v1"))
    );
    // Headers given as an object come in name order (a list keeps its order, see the round trip below).
    assert_eq!(
        r["headers"],
        serde_json::json!([{"key": "empty", "value": null}, {"key": "origin", "value": "test"}])
    );
    assert!(find(1, 1)["value"].is_null(), "a tombstone");
    assert_eq!(find(0, 0)["value"], r#"{"nested":[1,2]}"#);
    assert_eq!(find(0, 1)["key_hex"], "00ff");
    // What consume --format json prints goes back in as is: same keys, values, headers, partitions, times.
    ok(&fjord(
        b,
        &["produce", "copy", "--format", "json"],
        Some(json.as_bytes()),
    ));
    let copied = ok(&fjord(
        b,
        &[
            "consume",
            "copy",
            "--format",
            "json",
            "-e",
            "--from-beginning",
        ],
        None,
    ));
    let strip = |s: &str| -> Vec<String> {
        let mut v: Vec<String> = s
            .lines()
            .map(|l| {
                let mut r: serde_json::Value = serde_json::from_str(l).unwrap();
                r.as_object_mut().unwrap().remove("topic");
                r.to_string()
            })
            .collect();
        v.sort();
        v
    };
    assert_eq!(strip(&copied), strip(&json));
    // kafka-console-producer's properties, the tombstone marker, --producer-property.
    ok(&fjord(
        b,
        &[
            "produce",
            "src",
            "-p",
            "0",
            "--property",
            "parse.key=true",
            "--property",
            "key.separator=::",
            "--property",
            "null.marker=NULL",
            "--producer-property",
            "linger.ms=1",
        ],
        Some(b"a::1\nb::NULL\nNULL::3\n"),
    ));
    let out = ok(&fjord(
        b,
        &[
            "consume",
            "src",
            "-p",
            "0",
            "-o",
            "-3",
            "-e",
            "--print-key",
            "--separator",
            "=",
        ],
        None,
    ));
    assert_eq!(out, "a=1\nb=null\nnull=3\n");
}

#[test]
fn every_flag_of_produce_and_consume_has_help_and_help_shows_examples() {
    for cmd in ["produce", "consume"] {
        let help = ok(&fjord("127.0.0.1:9", &["help", cmd], None));
        assert!(help.contains("Examples:"), "`fjord help {cmd}`:\n{help}");
        let lines: Vec<&str> = help.lines().collect();
        // clap's long help: an argument or option line, then its description indented by 10.
        for (i, l) in lines.iter().enumerate() {
            let entry = (l.starts_with("  -")
                || l.starts_with("      --")
                || l.starts_with("  <")
                || l.starts_with("  ["))
                && !l.starts_with("   ");
            let entry = entry || l.starts_with("      --");
            if !entry {
                continue;
            }
            let next = lines.get(i + 1).copied().unwrap_or("");
            assert!(
                next.len() > 10 && next.starts_with("          ") && !next[10..].starts_with(' '),
                "`fjord {cmd}`: `{}` has no help text",
                l.trim()
            );
        }
    }
    let top = ok(&fjord("127.0.0.1:9", &["--help"], None));
    assert!(
        top.contains("fjord produce") && top.contains("fjord consume"),
        "{top}"
    );
}
