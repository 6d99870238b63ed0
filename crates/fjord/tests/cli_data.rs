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
    // The repro: partitions 1 and 2 had nothing to print; their position (0) must have been
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
