//! End-to-end tests of consumer groups: real broker processes, group members from confluent-kafka,
//! kafka-python and kcat, and the `fjord groups` / `fjord consume --group` commands.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;
use serde_json::Value;

const CLIENT_TIMEOUT: Duration = Duration::from_secs(240);
const T: Duration = Duration::from_secs(120);
/// The session timeout the group members use (the broker's group.min.session.timeout.ms).
const SESSION_TIMEOUT: Duration = Duration::from_secs(6);

/// A broker whose groups start without the initial rebalance delay, with a light offsets topic.
fn group_broker(dir: &tempfile::TempDir) -> BrokerProc {
    BrokerProc::start(
        &dir.path().join("data"),
        &[
            ("group.initial.rebalance.delay.ms", "0"),
            ("offsets.topic.num.partitions", "4"),
        ],
    )
}

/// Asserts the command failed with `code` and a message containing `needle`; returns stderr.
fn fails(out: &Output, code: i32, needle: &str) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(code),
        "expected exit {code}; stdout: {}\nstderr: {err}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(err.contains(needle), "stderr lacks `{needle}`: {err}");
    err
}

fn json(out: &Output) -> Value {
    let text = ok(out);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Retries `f` every 100 ms until it returns Ok, for at most `timeout`; panics with its last error.
fn wait_for<R>(timeout: Duration, what: &str, mut f: impl FnMut() -> Result<R, String>) -> R {
    let start = Instant::now();
    loop {
        match f() {
            Ok(r) => return r,
            Err(e) if start.elapsed() >= timeout => {
                panic!("timed out after {timeout:?} waiting for {what}: {e}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// A long-running child whose output lines are collected as they arrive. Killed on drop.
struct Spawned {
    child: Child,
    out: Arc<Mutex<Vec<String>>>,
    err: Arc<Mutex<Vec<String>>>,
}

impl Spawned {
    fn new(cmd: &mut Command) -> Spawned {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
        let collect = |r: Box<dyn std::io::Read + Send>| {
            let lines = Arc::new(Mutex::new(Vec::new()));
            let l = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(r).lines().map_while(Result::ok) {
                    l.lock().unwrap().push(line);
                }
            });
            lines
        };
        let out = collect(Box::new(child.stdout.take().expect("stdout")));
        let err = collect(Box::new(child.stderr.take().expect("stderr")));
        Spawned { child, out, err }
    }

    fn stdout(&self) -> Vec<String> {
        self.out.lock().unwrap().clone()
    }

    fn stderr(&self) -> Vec<String> {
        self.err.lock().unwrap().clone()
    }

    fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status();
    }

    /// Waits (bounded) for the child to exit.
    fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let child = &mut self.child;
        wait_for(timeout, "the process to exit", || {
            child
                .try_wait()
                .map_err(|e| e.to_string())?
                .ok_or_else(|| "still running".to_string())
        })
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Days since the epoch to (year, month, day) (Howard Hinnant's civil_from_days).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Now as an RFC 3339 UTC date-time with milliseconds.
fn now_rfc3339() -> String {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let (days, rest) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    let (y, mo, d) = civil_from_days(days);
    format!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rest / 3_600_000,
        rest / 60_000 % 60,
        rest / 1000 % 60,
        rest % 1000
    )
}

/// The group's committed offsets read with confluent-kafka (independently of the CLI): partition -> offset.
fn committed_py(bootstrap: &str, group: &str, topic: &str, parts: &[i32]) -> Vec<Option<i64>> {
    let ps: Vec<String> = parts.iter().map(i32::to_string).collect();
    let mut args = vec![bootstrap, group, "get", topic];
    args.extend(ps.iter().map(String::as_str));
    let out = run_client("group_offsets.py", &args, T);
    let v: Value = serde_json::from_str(out.trim()).expect("group_offsets.py JSON");
    parts.iter().map(|p| v[p.to_string()].as_i64()).collect()
}

fn produce_lines(bootstrap: &str, topic: &str, partition: i32, lines: &[String]) {
    let input = lines.join("\n") + "\n";
    ok(&fjord(
        bootstrap,
        &["produce", topic, "--partition", &partition.to_string()],
        Some(input.as_bytes()),
    ));
}

/// The `partitions` array of `fjord groups describe --output json`, keyed by partition.
fn describe(bootstrap: &str, group: &str) -> Value {
    json(&fjord(
        bootstrap,
        &["groups", "describe", group, "--output", "json"],
        None,
    ))
}

/// Like `describe`, but a failure (e.g. a group that does not exist yet) is an `Err` for `wait_for`.
fn try_describe(bootstrap: &str, group: &str) -> Result<Value, String> {
    let out = fjord(
        bootstrap,
        &["groups", "describe", group, "--output", "json"],
        None,
    );
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())
}

fn partition_row<'a>(desc: &'a Value, topic: &str, p: i64) -> Option<&'a Value> {
    desc["partitions"]
        .as_array()?
        .iter()
        .find(|r| r["topic"] == topic && r["partition"] == p)
}

// -------------------------------------------------------------------------------------------------------
// Splitting partitions and taking over

#[test]
fn two_confluent_consumers_split_four_partitions_and_the_survivor_takes_over() {
    let dir = temp_dir();
    let broker = group_broker(&dir);
    let out = run_client(
        "group_split_confluent.py",
        &[&broker.bootstrap],
        CLIENT_TIMEOUT,
    );
    assert!(out.lines().any(|l| l.starts_with("ok")), "{out}");
}

#[test]
fn two_kafka_python_consumers_split_four_partitions_and_the_survivor_takes_over() {
    let dir = temp_dir();
    let broker = group_broker(&dir);
    let out = run_client(
        "group_split_kafka_python.py",
        &[&broker.bootstrap],
        CLIENT_TIMEOUT,
    );
    assert!(out.lines().any(|l| l.starts_with("ok")), "{out}");
}

/// The partitions kcat reports in its latest "Group ... rebalanced" line (empty after a revoke).
fn kcat_assignment(stderr: &[String]) -> Vec<i32> {
    let Some(line) = stderr.iter().rev().find(|l| l.contains("rebalanced")) else {
        return Vec::new();
    };
    let Some((_, list)) = line.split_once("assigned: ") else {
        return Vec::new();
    };
    let mut ps: Vec<i32> = list
        .split(", ")
        .filter_map(|t| t.rsplit_once('[')?.1.strip_suffix(']')?.parse().ok())
        .collect();
    ps.sort_unstable();
    ps
}

#[test]
fn two_kcat_balanced_consumers_split_four_partitions_and_the_survivor_takes_over() {
    let dir = temp_dir();
    let broker = group_broker(&dir);
    let b = broker.bootstrap.as_str();
    ok(&fjord(
        b,
        &["topics", "create", "kcat-split", "--partitions", "4"],
        None,
    ));
    let member = || {
        Spawned::new(Command::new("kcat").args([
            "-b",
            b,
            "-X",
            "session.timeout.ms=6000",
            "-X",
            "heartbeat.interval.ms=500",
            "-X",
            "auto.offset.reset=earliest",
            "-u",
            "-f",
            "%p %s\n",
            "-G",
            "kcat-group",
            "kcat-split",
        ]))
    };
    let a = member();
    wait_for(T, "the first kcat to own all four partitions", || {
        let got = kcat_assignment(&a.stderr());
        (got == [0, 1, 2, 3])
            .then_some(())
            .ok_or(format!("{got:?}; stderr: {:?}", a.stderr()))
    });
    let mut second = member();
    let (pa, pb) = wait_for(T, "the two kcat members to split the partitions", || {
        let (pa, pb) = (
            kcat_assignment(&a.stderr()),
            kcat_assignment(&second.stderr()),
        );
        let mut all: Vec<i32> = pa.iter().chain(&pb).copied().collect();
        all.sort_unstable();
        (!pa.is_empty() && !pb.is_empty() && all == [0, 1, 2, 3])
            .then(|| (pa.clone(), pb.clone()))
            .ok_or(format!("a={pa:?} b={pb:?}"))
    });

    for p in 0..4 {
        let lines: Vec<String> = (0..10).map(|i| format!("p{p}-m{i}")).collect();
        produce_lines(b, "kcat-split", p, &lines);
    }
    wait_for(T, "40 messages", || {
        let n = a.stdout().len() + second.stdout().len();
        (n >= 40).then_some(()).ok_or(format!("{n} messages"))
    });
    std::thread::sleep(Duration::from_millis(500));
    let mut all = Vec::new();
    for (who, lines, owned) in [("a", a.stdout(), &pa), ("b", second.stdout(), &pb)] {
        for l in lines {
            let (p, v) = l.split_once(' ').expect("kcat line");
            let p: i32 = p.parse().expect("partition");
            assert!(
                owned.contains(&p),
                "{who} read `{v}` from partition {p}, owns {owned:?}"
            );
            assert!(v.starts_with(&format!("p{p}-")), "`{v}` read from {p}");
            all.push(v.to_string());
        }
    }
    all.sort();
    let mut expected: Vec<String> = (0..4)
        .flat_map(|p| (0..10).map(move |i| format!("p{p}-m{i}")))
        .collect();
    expected.sort();
    assert_eq!(all, expected, "every message exactly once");

    // The second kcat leaves (SIGTERM closes the consumer, which leaves the group).
    second.signal("TERM");
    let left = Instant::now();
    wait_for(
        SESSION_TIMEOUT,
        "the survivor to own all four partitions",
        || {
            let got = kcat_assignment(&a.stderr());
            (got == [0, 1, 2, 3])
                .then_some(())
                .ok_or(format!("{got:?}"))
        },
    );
    assert!(left.elapsed() <= SESSION_TIMEOUT);
    assert!(second.wait(T).success(), "{:?}", second.stderr());
    let before = a.stdout().len();
    for p in 0..4 {
        produce_lines(b, "kcat-split", p, &[format!("p{p}-late")]);
    }
    wait_for(T, "the survivor to read every partition", || {
        let late: Vec<String> = a.stdout()[before..]
            .iter()
            .filter(|l| l.ends_with("-late"))
            .cloned()
            .collect();
        (late.len() == 4).then_some(()).ok_or(format!("{late:?}"))
    });
}

// -------------------------------------------------------------------------------------------------------
// Restarts

#[test]
fn rolling_restart_processes_every_message_and_committed_offsets_never_go_back() {
    let dir = temp_dir();
    let broker = group_broker(&dir);
    let out = run_client(
        "group_rolling_restart.py",
        &[&broker.bootstrap],
        CLIENT_TIMEOUT,
    );
    assert!(out.lines().any(|l| l.starts_with("ok")), "{out}");
}

#[test]
fn committed_offsets_survive_broker_kill9_and_a_consumer_resumes_exactly_there() {
    let dir = temp_dir();
    let mut broker = group_broker(&dir);
    let out = run_client(
        "group_resume.py",
        &[&broker.bootstrap, "phase1"],
        CLIENT_TIMEOUT,
    );
    let committed: Vec<String> = out
        .lines()
        .find_map(|l| l.strip_prefix("committed "))
        .unwrap_or_else(|| panic!("no committed line: {out}"))
        .split_whitespace()
        .map(String::from)
        .collect();
    assert!(!committed.is_empty(), "{out}");
    broker.kill9();
    broker.restart();
    // The CLI sees the same offsets after the crash.
    let desc = describe(&broker.bootstrap, "resume-group");
    for c in &committed {
        let (p, o) = c.split_once('=').unwrap();
        let row = partition_row(&desc, "resume", p.parse().unwrap())
            .unwrap_or_else(|| panic!("partition {p} missing: {desc}"));
        assert_eq!(row["committed_offset"], o.parse::<i64>().unwrap(), "{desc}");
        assert_eq!(row["log_end_offset"], 50, "{desc}");
    }
    let mut args = vec![broker.bootstrap.as_str(), "phase2"];
    args.extend(committed.iter().map(String::as_str));
    let out = run_client("group_resume.py", &args, CLIENT_TIMEOUT);
    assert!(out.lines().any(|l| l.starts_with("ok")), "{out}");
}

#[test]
fn static_member_restart_within_the_session_timeout_causes_no_rebalance() {
    let dir = temp_dir();
    let broker = group_broker(&dir);
    let out = run_client(
        "group_static_member.py",
        &[&broker.bootstrap],
        CLIENT_TIMEOUT,
    );
    assert!(out.lines().any(|l| l.starts_with("ok")), "{out}");
}

#[test]
fn kip848_consumer_protocol_members_join_consume_and_rebalance() {
    let dir = temp_dir();
    let broker = group_broker(&dir);
    let out = run_client(
        "group_consumer_protocol.py",
        &[&broker.bootstrap],
        CLIENT_TIMEOUT,
    );
    assert!(out.lines().any(|l| l.starts_with("ok")), "{out}");
}

#[test]
fn kip848_a_regex_subscription_is_resolved_by_the_broker_and_picks_up_new_topics() {
    let dir = temp_dir();
    let broker = group_broker(&dir);
    let out = run_client(
        "group_regex_subscribe.py",
        &[&broker.bootstrap],
        CLIENT_TIMEOUT,
    );
    assert!(out.lines().any(|l| l.starts_with("ok")), "{out}");
}

#[test]
fn kip848_a_consumer_changing_its_subscription_in_a_tight_loop_ends_with_the_last_one() {
    // librdkafka's 0045 subscribe_many_updates: without the coordinator's append linger, librdkafka lost the
    // subscription made while it revoked partitions and never rejoined.
    let dir = temp_dir();
    let broker = group_broker(&dir);
    let out = run_client(
        "group_subscribe_updates.py",
        &[&broker.bootstrap, "60"],
        CLIENT_TIMEOUT,
    );
    assert!(out.lines().any(|l| l.starts_with("ok")), "{out}");
}

#[test]
fn kip848_a_second_instance_of_a_held_static_id_is_refused_with_unreleased_instance_id() {
    let dir = temp_dir();
    let broker = group_broker(&dir);
    let out = run_client(
        "group_static_fenced.py",
        &[&broker.bootstrap],
        CLIENT_TIMEOUT,
    );
    assert!(out.lines().any(|l| l.starts_with("ok")), "{out}");
}

/// A KIP-848 group as `fjord groups describe` shows it: (group epoch, the member's epoch, assignments).
type Kip848View = (i64, i64, Vec<(String, Vec<i64>)>);

#[test]
fn kip848_a_member_keeps_its_epoch_and_assignment_across_a_broker_kill9() {
    let dir = temp_dir();
    let mut broker = group_broker(&dir);
    let flag = dir.path().join("restarted");
    let script = workspace_root().join("tests/clients/group_kip848_restart.py");
    let mut client = Spawned::new(
        Command::new(python())
            .arg(script)
            .arg(&broker.bootstrap)
            .arg(&flag),
    );
    let member = wait_for(CLIENT_TIMEOUT, "the member to be ready", || {
        client
            .stdout()
            .iter()
            .find_map(|l| l.strip_prefix("ready ").map(String::from))
            .ok_or_else(|| format!("{:?} {:?}", client.stdout(), client.stderr()))
    });
    let b = broker.bootstrap.clone();
    // The member's epoch and assignment as the coordinator has them once the group settled.
    let settled = |d: &Value| -> Result<Kip848View, String> {
        let m = d["members"]
            .as_array()
            .and_then(|ms| ms.iter().find(|m| m["member_id"] == member.as_str()))
            .ok_or(format!("{member} is not a member: {d}"))?;
        let a = kip848_assignments(d, "k848r");
        if d["state"] != "Stable" || a.len() != 1 || a[0].1 != [0, 1, 2, 3] {
            return Err(format!("not settled: {d}"));
        }
        Ok((
            d["group_epoch"].as_i64().unwrap_or(-1),
            m["member_epoch"].as_i64().unwrap_or(-1),
            a,
        ))
    };
    let before = wait_for(T, "a stable group", || {
        settled(&try_describe(&b, "k848r-group")?)
    });
    // Subscribing to two topics and then one moved the group epoch past a fresh group's.
    assert!(before.0 >= 2 && before.1 == before.0, "{before:?}");

    broker.kill9();
    broker.restart_on_same_port();
    assert_eq!(broker.bootstrap, b);
    // The coordinator has the member back from __consumer_offsets, with its epoch and assignment.
    let after = wait_for(T, "the restored group", || {
        settled(&try_describe(&b, "k848r-group")?)
    });
    assert_eq!(after, before, "the group after the restart");
    let text = ok(&fjord(&b, &["groups", "describe", "k848r-group"], None));
    assert!(text.contains("Members: 1"), "{text}");
    assert!(text.contains(&member), "{text}");

    std::fs::write(&flag, b"").unwrap();
    wait_for(
        CLIENT_TIMEOUT,
        "the member to read what was produced after the restart",
        || {
            let out = client.stdout();
            out.iter()
                .any(|l| l == "consumed")
                .then_some(())
                .ok_or_else(|| format!("{out:?} {:?}", client.stderr()))
        },
    );
    // The member carried on without a new epoch: no rebalance happened.
    let end = settled(&describe(&b, "k848r-group")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(end, before, "the group at the end");
    std::fs::write(dir.path().join("restarted.done"), b"").unwrap();
    assert!(
        client.wait(CLIENT_TIMEOUT).success(),
        "{:?}",
        client.stderr()
    );
    let out = client.stdout();
    assert!(out.iter().any(|l| l.starts_with("ok")), "{out:?}");
}

// -------------------------------------------------------------------------------------------------------
// fjord groups and fjord consume --group

#[test]
fn describe_reports_lag_as_log_end_minus_committed_for_each_partition() {
    let dir = temp_dir();
    let broker = group_broker(&dir);
    let b = broker.bootstrap.as_str();
    ok(&fjord(
        b,
        &["topics", "create", "lagt", "--partitions", "3"],
        None,
    ));
    for (p, n) in [(0, 10), (1, 20), (2, 5)] {
        let lines: Vec<String> = (0..n).map(|i| format!("p{p}-{i}")).collect();
        produce_lines(b, "lagt", p, &lines);
    }
    run_client(
        "group_offsets.py",
        &[b, "lag-g", "set", "lagt", "0=4", "1=20"],
        T,
    );

    let desc = describe(b, "lag-g");
    assert_eq!(desc["group"], "lag-g", "{desc}");
    assert_eq!(desc["state"], "Empty", "{desc}");
    assert_eq!(desc["classic"], true, "{desc}");
    assert_eq!(desc["members"], serde_json::json!([]), "{desc}");
    let topics = json(&fjord(
        b,
        &["topics", "describe", "lagt", "--output", "json"],
        None,
    ));
    for (p, committed) in [(0, 4), (1, 20)] {
        let row = partition_row(&desc, "lagt", p).unwrap_or_else(|| panic!("p{p}: {desc}"));
        let high = &topics[0]["partitions"][p as usize]["high_offset"];
        assert_eq!(row["committed_offset"], committed, "{desc}");
        assert_eq!(&row["log_end_offset"], high, "{desc}");
        assert_eq!(
            row["lag"].as_i64().unwrap(),
            high.as_i64().unwrap() - committed,
            "{desc}"
        );
        assert_eq!(row["member_id"], Value::Null);
    }
    // p2 has no commit and no member, but the group committed on its topic: it is listed with no
    // committed offset and its whole log as lag, as kafka-consumer-groups.sh shows it (not hidden).
    let row = partition_row(&desc, "lagt", 2).unwrap_or_else(|| panic!("p2 hidden: {desc}"));
    assert_eq!(row["committed_offset"], Value::Null, "{desc}");
    assert_eq!(row["log_start_offset"], 0, "{desc}");
    assert_eq!(row["lag"], 5, "{desc}");
    assert_eq!(desc["lag"], 6 + 5, "{desc}");

    let text = ok(&fjord(b, &["groups", "describe", "lag-g"], None));
    assert!(text.contains("State: Empty"), "{text}");
    assert!(text.contains("has no active members"), "{text}");
    let row = |p: &str| {
        text.lines()
            .find(|l| l.starts_with("lag-g ") && l.split_whitespace().nth(2) == Some(p))
            .unwrap_or_else(|| panic!("no row for lagt {p}: {text}"))
            .split_whitespace()
            .take(6)
            .collect::<Vec<_>>()
    };
    assert_eq!(row("0"), ["lag-g", "lagt", "0", "4", "10", "6"], "{text}");
    assert_eq!(row("2"), ["lag-g", "lagt", "2", "-", "5", "5"], "{text}");

    let list = json(&fjord(b, &["groups", "list", "--output", "json"], None));
    let g = list
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["group"] == "lag-g")
        .unwrap_or_else(|| panic!("lag-g not listed: {list}"));
    assert_eq!(g["state"], "Empty");
    assert_eq!(g["members"], 0);
    let text = ok(&fjord(b, &["groups", "list", "--state", "empty"], None));
    assert!(text.lines().any(|l| l.starts_with("lag-g ")), "{text}");
    let text = ok(&fjord(b, &["groups", "list", "--state", "Stable"], None));
    assert!(!text.contains("lag-g"), "{text}");
}

#[test]
fn reset_offsets_dry_run_changes_nothing_and_execute_commits() {
    let dir = temp_dir();
    let broker = group_broker(&dir);
    let b = broker.bootstrap.as_str();
    ok(&fjord(
        b,
        &["topics", "create", "rst", "--partitions", "3"],
        None,
    ));
    for (p, n) in [(0, 10), (1, 20), (2, 5)] {
        let lines: Vec<String> = (0..n).map(|i| format!("p{p}-{i}")).collect();
        produce_lines(b, "rst", p, &lines);
    }
    run_client(
        "group_offsets.py",
        &[b, "rst-g", "set", "rst", "0=4", "1=20"],
        T,
    );
    let parts = [0, 1, 2];
    let reset = |args: &[&str]| {
        let mut a = vec!["groups", "reset-offsets", "rst-g"];
        a.extend(args);
        a.extend(["--output", "json"]);
        fjord(b, &a, None)
    };
    let new_offsets = |v: &Value| -> Vec<(i64, Option<i64>, i64)> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|r| {
                assert_eq!(r["group"], "rst-g");
                assert_eq!(r["topic"], "rst");
                (
                    r["partition"].as_i64().unwrap(),
                    r["old_offset"].as_i64(),
                    r["new_offset"].as_i64().unwrap(),
                )
            })
            .collect()
    };

    // Dry runs (the default and --dry-run) show the plan and commit nothing.
    let out = reset(&["--topic", "rst", "--to-earliest"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("Dry run"));
    assert_eq!(
        new_offsets(&json(&out)),
        [(0, Some(4), 0), (1, Some(20), 0), (2, None, 0)]
    );
    let out = reset(&["--topic", "rst", "--to-offset", "100", "--dry-run"]);
    assert_eq!(
        new_offsets(&json(&out)),
        [(0, Some(4), 10), (1, Some(20), 20), (2, None, 5)],
        "--to-offset is kept within the log"
    );
    let out = reset(&["--topic", "rst:0,1", "--shift-by", "-7"]);
    assert_eq!(
        new_offsets(&json(&out)),
        [(0, Some(4), 0), (1, Some(20), 13)]
    );
    assert_eq!(
        committed_py(b, "rst-g", "rst", &parts),
        [Some(4), Some(20), None],
        "a dry run must not commit"
    );

    // --execute commits.
    let out = reset(&["--topic", "rst:0", "--shift-by", "-2", "--execute"]);
    assert_eq!(new_offsets(&json(&out)), [(0, Some(4), 2)]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("Committed"));
    assert_eq!(
        committed_py(b, "rst-g", "rst", &parts),
        [Some(2), Some(20), None]
    );
    ok(&reset(&["--topic", "rst:0,2", "--to-latest", "--execute"]));
    assert_eq!(
        committed_py(b, "rst-g", "rst", &parts),
        [Some(10), Some(20), Some(5)]
    );
    ok(&reset(&["--topic", "rst", "--to-earliest", "--execute"]));
    assert_eq!(
        committed_py(b, "rst-g", "rst", &parts),
        [Some(0), Some(0), Some(0)]
    );
    ok(&reset(&[
        "--topic",
        "rst:1",
        "--to-offset",
        "3",
        "--execute",
    ]));
    assert_eq!(
        committed_py(b, "rst-g", "rst", &parts),
        [Some(0), Some(3), Some(0)]
    );

    // --to-datetime: the first message at or after the time, or the log end when there is none.
    std::thread::sleep(Duration::from_millis(50));
    let when = now_rfc3339();
    std::thread::sleep(Duration::from_millis(50));
    produce_lines(
        b,
        "rst",
        0,
        &["late-0".into(), "late-1".into(), "late-2".into()],
    );
    let out = reset(&["--topic", "rst", "--to-datetime", &when, "--execute"]);
    assert_eq!(
        new_offsets(&json(&out)),
        [(0, Some(0), 10), (1, Some(3), 20), (2, Some(0), 5)],
        "at {when}"
    );
    assert_eq!(
        committed_py(b, "rst-g", "rst", &parts),
        [Some(10), Some(20), Some(5)]
    );
    let out = reset(&["--topic", "rst", "--to-datetime", "2000-01-01T00:00:00Z"]);
    assert_eq!(
        new_offsets(&json(&out)),
        [(0, Some(10), 0), (1, Some(20), 0), (2, Some(5), 0)]
    );
    let desc = describe(b, "rst-g");
    assert_eq!(partition_row(&desc, "rst", 0).unwrap()["lag"], 3, "{desc}");

    // Mistakes get clear errors.
    fails(
        &reset(&["--topic", "nope", "--to-earliest"]),
        4,
        "topic `nope` does not exist",
    );
    fails(
        &reset(&["--topic", "rst:7", "--to-earliest"]),
        1,
        "has no partition 7",
    );
    // Bad arguments exit 2 (issue #10 item 9); a date before 1970 is refused, not turned into librdkafka's
    // "latest" (-1) or "earliest" (-2), which silently moved the group (review finding).
    fails(
        &reset(&["--topic", "rst", "--to-datetime", "yesterday"]),
        2,
        "is neither milliseconds since 1970 nor a date-time",
    );
    fails(
        &reset(&[
            "--topic",
            "rst",
            "--to-datetime",
            "1969-12-31T23:59:59.999Z",
            "--execute",
        ]),
        2,
        "before 1970",
    );
    fails(
        &reset(&["--topic", "rst", "--to-earliest", "--to-latest"]),
        2,
        "cannot be used with",
    );
    fails(&reset(&["--topic", "rst"]), 2, "required");
    let out = fjord(
        b,
        &[
            "groups",
            "reset-offsets",
            "fresh-g",
            "--topic",
            "rst",
            "--shift-by",
            "1",
        ],
        None,
    );
    fails(&out, 1, "has no committed offset");
}

#[test]
fn active_groups_refuse_reset_and_delete_and_empty_groups_can_be_deleted() {
    let dir = temp_dir();
    let broker = group_broker(&dir);
    let b = broker.bootstrap.as_str();
    ok(&fjord(
        b,
        &["topics", "create", "live", "--partitions", "3"],
        None,
    ));
    for p in 0..3 {
        let lines: Vec<String> = (0..10).map(|i| format!("p{p}-{i}")).collect();
        produce_lines(b, "live", p, &lines);
    }
    let mut consumer = Spawned::new(
        Command::new(env!("CARGO_BIN_EXE_fjord"))
            .args(["consume", "live", "--group", "live-g", "--from-beginning"])
            .env("FJORD_BOOTSTRAP_SERVER", b),
    );
    // The member shows up with the whole topic assigned, then its auto-commits bring the lag to 0.
    let desc = wait_for(Duration::from_secs(40), "a stable group with lag 0", || {
        let d = try_describe(b, "live-g")?;
        let rows = d["partitions"].as_array().cloned().unwrap_or_default();
        let caught_up = rows.len() == 3 && rows.iter().all(|r| r["lag"] == 0);
        (d["state"] == "Stable"
            && d["members"].as_array().is_some_and(|m| m.len() == 1)
            && caught_up)
            .then(|| d.clone())
            .ok_or(format!("{d}"))
    });
    let member = &desc["members"][0];
    assert_eq!(
        member["assignment"],
        serde_json::json!([{"topic": "live", "partitions": [0, 1, 2]}]),
        "{desc}"
    );
    assert!(!member["member_id"].as_str().unwrap().is_empty());
    assert!(!member["host"].as_str().unwrap().is_empty(), "{desc}");
    for p in 0..3 {
        let row = partition_row(&desc, "live", p).unwrap();
        assert_eq!(row["member_id"], member["member_id"], "{desc}");
        assert_eq!(row["committed_offset"], 10, "{desc}");
        assert_eq!(row["log_end_offset"], 10, "{desc}");
    }
    let text = ok(&fjord(b, &["groups", "describe", "live-g"], None));
    assert!(text.contains("State: Stable"), "{text}");
    assert!(text.contains("live:0,1,2"), "{text}");

    fails(
        &fjord(
            b,
            &[
                "groups",
                "reset-offsets",
                "live-g",
                "--topic",
                "live",
                "--to-earliest",
                "--execute",
            ],
            None,
        ),
        1,
        "group live-g is active (1 member); stop its consumers first",
    );
    fails(
        &fjord(b, &["groups", "delete", "live-g"], None),
        1,
        "it has active members",
    );
    let stable = json(&fjord(
        b,
        &["groups", "list", "--state", "stable", "--output", "json"],
        None,
    ));
    assert!(
        stable
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["group"] == "live-g" && g["members"] == 1),
        "{stable}"
    );

    // Ctrl-C: the consumer commits, leaves the group and reports what it printed.
    consumer.signal("INT");
    assert!(consumer.wait(T).success(), "{:?}", consumer.stderr());
    assert_eq!(consumer.stdout().len(), 30);
    assert!(
        consumer
            .stderr()
            .iter()
            .any(|l| l.contains("Processed a total of 30 messages")),
        "{:?}",
        consumer.stderr()
    );
    wait_for(SESSION_TIMEOUT, "the group to become empty", || {
        let d = try_describe(b, "live-g")?;
        (d["state"] == "Empty").then_some(()).ok_or(format!("{d}"))
    });
    let desc = describe(b, "live-g");
    for p in 0..3 {
        assert_eq!(
            partition_row(&desc, "live", p).unwrap()["committed_offset"],
            10
        );
    }

    let out = fjord(b, &["groups", "delete", "live-g"], None);
    ok(&out);
    assert!(String::from_utf8_lossy(&out.stderr).contains("Deleted group live-g."));
    let list = json(&fjord(b, &["groups", "list", "--output", "json"], None));
    assert!(
        !list
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["group"] == "live-g"),
        "{list}"
    );
    assert_eq!(
        committed_py(b, "live-g", "live", &[0, 1, 2]),
        [None, None, None],
        "deleting a group deletes its offsets"
    );
    fails(
        &fjord(b, &["groups", "describe", "live-g"], None),
        1,
        "group `live-g` does not exist",
    );
    fails(
        &fjord(b, &["groups", "delete", "live-g"], None),
        1,
        "group `live-g` does not exist",
    );
}

/// A `fjord consume --group` member of the KIP-848 consumer protocol (`group.protocol=consumer`).
fn kip848_member(bootstrap: &str, topic: &str, group: &str) -> Spawned {
    Spawned::new(
        Command::new(env!("CARGO_BIN_EXE_fjord"))
            .args(["consume", topic, "--group", group, "--from-beginning"])
            .args(["-X", "group.protocol=consumer"])
            .env("FJORD_BOOTSTRAP_SERVER", bootstrap),
    )
}

/// The members' assignments of a described group as member id -> partitions of `topic`.
fn kip848_assignments(desc: &Value, topic: &str) -> Vec<(String, Vec<i64>)> {
    let mut out = Vec::new();
    for m in desc["members"].as_array().into_iter().flatten() {
        let mut ps = Vec::new();
        for a in m["assignment"].as_array().into_iter().flatten() {
            if a["topic"] == topic {
                ps.extend(
                    a["partitions"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_i64),
                );
            }
        }
        out.push((m["member_id"].as_str().unwrap_or_default().to_string(), ps));
    }
    out
}

#[test]
fn describe_shows_the_members_and_assignments_of_a_kip848_group_and_reset_refuses_it() {
    let dir = temp_dir();
    let broker = BrokerProc::start(
        &dir.path().join("data"),
        &[
            ("offsets.topic.num.partitions", "4"),
            ("group.consumer.heartbeat.interval.ms", "500"),
        ],
    );
    let b = broker.bootstrap.as_str();
    ok(&fjord(
        b,
        &["topics", "create", "k848", "--partitions", "4"],
        None,
    ));
    for p in 0..4 {
        let lines: Vec<String> = (0..5).map(|i| format!("p{p}-{i}")).collect();
        produce_lines(b, "k848", p, &lines);
    }
    let mut members = [
        kip848_member(b, "k848", "k848-g"),
        kip848_member(b, "k848", "k848-g"),
    ];
    // Both members own part of the topic, together all of it, and the group has settled.
    let desc = wait_for(Duration::from_secs(60), "a stable two-member split", || {
        let d = try_describe(b, "k848-g")?;
        let a = kip848_assignments(&d, "k848");
        let mut all: Vec<i64> = a.iter().flat_map(|(_, ps)| ps.iter().copied()).collect();
        all.sort_unstable();
        (d["state"] == "Stable"
            && a.len() == 2
            && a.iter().all(|(_, ps)| !ps.is_empty())
            && all == [0, 1, 2, 3])
        .then(|| d.clone())
        .ok_or(format!("{d}"))
    });
    assert_eq!(desc["classic"], false, "{desc}");
    assert_eq!(desc["protocol_type"], "consumer", "{desc}");
    let (group_epoch, assignment_epoch) = (
        desc["group_epoch"].as_i64().unwrap(),
        desc["assignment_epoch"].as_i64().unwrap(),
    );
    assert!(group_epoch > 0 && assignment_epoch == group_epoch, "{desc}");
    let assignments = kip848_assignments(&desc, "k848");
    for m in desc["members"].as_array().unwrap() {
        assert!(!m["member_id"].as_str().unwrap().is_empty(), "{desc}");
        assert!(!m["client_id"].as_str().unwrap().is_empty(), "{desc}");
        assert_eq!(m["host"], "127.0.0.1", "{desc}");
        assert_eq!(
            m["subscribed_topics"],
            serde_json::json!(["k848"]),
            "{desc}"
        );
    }
    // Every partition row names the member that owns it.
    for (member, ps) in &assignments {
        for p in ps {
            let row = partition_row(&desc, "k848", *p).unwrap_or_else(|| panic!("{desc}"));
            assert_eq!(row["member_id"], member.as_str(), "{desc}");
            assert_eq!(row["log_end_offset"], 5, "{desc}");
        }
    }

    let text = ok(&fjord(b, &["groups", "describe", "k848-g"], None));
    assert!(text.contains("State: Stable"), "{text}");
    assert!(text.contains("Members: 2"), "{text}");
    assert!(
        text.contains(&format!(
            "GroupEpoch: {group_epoch}\tAssignmentEpoch: {assignment_epoch}"
        )),
        "{text}"
    );
    assert!(text.contains("MEMBER-ID"), "{text}");
    assert!(!text.contains("are not shown"), "{text}");
    for (member, ps) in &assignments {
        let ps: Vec<String> = ps.iter().map(i64::to_string).collect();
        let line = text
            .lines()
            .find(|l| l.starts_with(member.as_str()))
            .unwrap_or_else(|| panic!("no member line for {member}: {text}"));
        assert!(line.ends_with(&format!("k848:{}", ps.join(","))), "{text}");
    }

    fails(
        &fjord(
            b,
            &[
                "groups",
                "reset-offsets",
                "k848-g",
                "--topic",
                "k848",
                "--to-earliest",
                "--execute",
            ],
            None,
        ),
        1,
        "group k848-g is active (2 members); stop its consumers first",
    );

    // Ctrl-C: both members leave; the group stays, empty, with what they committed.
    for m in &members {
        m.signal("INT");
    }
    for m in &mut members {
        assert!(m.wait(T).success(), "{:?}", m.stderr());
    }
    let desc = wait_for(Duration::from_secs(30), "the group to become empty", || {
        let d = try_describe(b, "k848-g")?;
        (d["state"] == "Empty" && d["members"] == serde_json::json!([]))
            .then(|| d.clone())
            .ok_or(format!("{d}"))
    });
    assert_eq!(desc["classic"], false, "{desc}");
    for p in 0..4 {
        let row = partition_row(&desc, "k848", p).unwrap_or_else(|| panic!("{desc}"));
        assert_eq!(row["committed_offset"], 5, "{desc}");
        assert_eq!(row["member_id"], Value::Null, "{desc}");
    }
    let text = ok(&fjord(b, &["groups", "describe", "k848-g"], None));
    assert!(text.contains("State: Empty"), "{text}");
    assert!(
        text.contains("Group k848-g has no active members."),
        "{text}"
    );
}

#[test]
fn consume_with_a_group_resumes_where_the_group_committed() {
    let dir = temp_dir();
    let broker = group_broker(&dir);
    let b = broker.bootstrap.as_str();
    ok(&fjord(
        b,
        &["topics", "create", "cg", "--partitions", "1"],
        None,
    ));
    let lines: Vec<String> = (0..20).map(|i| i.to_string()).collect();
    produce_lines(b, "cg", 0, &lines);
    let consume = |extra: &[&str]| {
        let mut a = vec!["consume", "cg", "--group", "cg-g"];
        a.extend(extra);
        ok(&fjord(b, &a, None))
    };
    assert_eq!(
        consume(&["--from-beginning", "--max-messages", "5"]),
        "0\n1\n2\n3\n4\n"
    );
    assert_eq!(
        consume(&["--from-beginning", "--max-messages", "5"]),
        "5\n6\n7\n8\n9\n"
    );
    // --from-beginning only matters where nothing is committed; --exit-at-end stops at the log end.
    let rest: String = (10..20).map(|i| format!("{i}\n")).collect();
    assert_eq!(consume(&["--exit-at-end"]), rest);
    let desc = describe(b, "cg-g");
    let row = partition_row(&desc, "cg", 0).unwrap();
    assert_eq!(
        (row["committed_offset"].as_i64(), row["lag"].as_i64()),
        (Some(20), Some(0))
    );
    // A new group without --from-beginning starts at the end.
    let out = ok(&fjord(
        b,
        &["consume", "cg", "--group", "cg-new", "--exit-at-end"],
        None,
    ));
    assert_eq!(out, "");
    fails(
        &fjord(b, &["consume", "cg", "--group", "x", "--offset", "3"], None),
        2,
        "cannot be used with",
    );
    fails(
        &fjord(b, &["consume", "nope", "--group", "x"], None),
        4,
        "topic `nope` does not exist",
    );
}

#[test]
fn groups_commands_report_an_unreachable_broker() {
    // A port nothing listens on.
    let b = "127.0.0.1:1";
    for args in [
        &["groups", "list", "--request-timeout-ms", "1500"][..],
        &["groups", "describe", "g", "--request-timeout-ms", "1500"][..],
        &["groups", "delete", "g", "--request-timeout-ms", "1500"][..],
    ] {
        fails(&fjord(b, args, None), 3, "cannot reach a broker");
    }
}

#[test]
fn deleting_a_topic_deletes_the_committed_offsets_of_its_partitions() {
    // Kafka's coordinator drops the offsets of deleted partitions, so a topic re-created under the same
    // name starts without stale commits (which would point past its log end).
    let dir = temp_dir();
    let broker = group_broker(&dir);
    let b = broker.bootstrap.as_str();
    ok(&fjord(
        b,
        &["topics", "create", "gone", "--partitions", "1"],
        None,
    ));
    ok(&fjord(
        b,
        &["topics", "create", "kept", "--partitions", "1"],
        None,
    ));
    for t in ["gone", "kept"] {
        let lines: Vec<String> = (0..10).map(|i| i.to_string()).collect();
        produce_lines(b, t, 0, &lines);
    }
    run_client("group_offsets.py", &[b, "del-g", "set", "gone", "0=7"], T);
    run_client("group_offsets.py", &[b, "del-g", "set", "kept", "0=3"], T);
    ok(&fjord(b, &["topics", "delete", "gone"], None));
    ok(&fjord(
        b,
        &["topics", "create", "gone", "--partitions", "1"],
        None,
    ));
    assert_eq!(
        committed_py(b, "del-g", "gone", &[0]),
        [None],
        "the re-created topic inherited the deleted topic's committed offset"
    );
    assert_eq!(committed_py(b, "del-g", "kept", &[0]), [Some(3)]);
}

#[test]
fn every_groups_command_has_help_with_an_example() {
    for sub in [
        "list",
        "describe",
        "reset-offsets",
        "delete-offsets",
        "delete",
    ] {
        let out = ok(&fjord("127.0.0.1:9", &["groups", sub, "--help"], None));
        assert!(
            out.contains("Example: fjord groups"),
            "`fjord groups {sub}` help has no example:\n{out}"
        );
    }
    let out = ok(&fjord("127.0.0.1:9", &["consume", "--help"], None));
    assert!(out.contains("--group <GROUP>"), "{out}");
}

/// Runs `fjord` and returns (exit code, stdout, stderr).
fn run(b: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let out = fjord(b, args, None);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The whitespace-separated cells of the table row of `text` whose first cells are `first`.
fn table_row<'a>(text: &'a str, first: &[&str]) -> Vec<&'a str> {
    text.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|cells| cells.starts_with(first))
        .unwrap_or_else(|| panic!("no row starting {first:?} in:\n{text}"))
}

#[test]
fn describe_takes_several_groups_or_all_and_has_kafkas_members_state_and_offsets_views() {
    let dir = temp_dir();
    let broker = group_broker(&dir);
    let b = broker.bootstrap.as_str();
    ok(&fjord(
        b,
        &["topics", "create", "views", "--partitions", "2"],
        None,
    ));
    produce_lines(b, "views", 0, &["a".into(), "b".into(), "c".into()]);
    produce_lines(b, "views", 1, &["d".into(), "e".into()]);
    // idle-g: no members, a commit on partition 0 only.
    ok(&fjord(
        b,
        &[
            "groups",
            "reset-offsets",
            "idle-g",
            "--topic",
            "views:0",
            "--to-offset",
            "1",
            "--execute",
        ],
        None,
    ));
    // live-g: one kcat member that owns both partitions and, starting at the log end, reads and commits
    // nothing.
    let _member = Spawned::new(Command::new("kcat").args([
        "-b",
        b,
        "-X",
        "session.timeout.ms=6000",
        "-X",
        "heartbeat.interval.ms=500",
        "-X",
        "auto.offset.reset=latest",
        "-X",
        "enable.auto.commit=false",
        "-u",
        "-G",
        "live-g",
        "views",
    ]));
    wait_for(T, "the kcat member to own both partitions", || {
        let d = try_describe(b, "live-g")?;
        let a = &d["members"][0]["assignment"];
        (d["state"] == "Stable"
            && a == &serde_json::json!([{"topic": "views", "partitions": [0, 1]}]))
            .then_some(())
            .ok_or(format!("{d}"))
    });

    // Several groups at once: an array, in the order named; --all-groups: every group.
    let both = json(&fjord(
        b,
        &["groups", "describe", "live-g", "idle-g", "--output", "json"],
        None,
    ));
    assert_eq!(both[0]["group"], "live-g", "{both}");
    assert_eq!(both[1]["group"], "idle-g", "{both}");
    // The member owns both partitions and has committed nothing: its lag is the whole log.
    let live_lag: Vec<&Value> = both[0]["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["lag"])
        .collect();
    assert_eq!(live_lag, [&Value::from(3), &Value::from(2)], "{both}");
    let all = json(&fjord(
        b,
        &["groups", "describe", "--all-groups", "--output", "json"],
        None,
    ));
    let names: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|g| g["group"].as_str())
        .collect();
    assert_eq!(names, ["idle-g", "live-g"], "{all}");

    // --offsets: Kafka's columns, one table for every group; uncommitted partitions show `-`.
    let (code, text, _) = run(b, &["groups", "describe", "idle-g", "live-g", "--offsets"]);
    assert_eq!(code, Some(0), "{text}");
    assert_eq!(
        text.lines()
            .next()
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>(),
        [
            "GROUP",
            "TOPIC",
            "PARTITION",
            "CURRENT-OFFSET",
            "LOG-END-OFFSET",
            "LAG",
            "CONSUMER-ID",
            "HOST",
            "CLIENT-ID"
        ],
        "{text}"
    );
    assert_eq!(
        table_row(&text, &["idle-g", "views", "0"]),
        ["idle-g", "views", "0", "1", "3", "2", "-", "-", "-"]
    );
    assert_eq!(
        table_row(&text, &["idle-g", "views", "1"]),
        ["idle-g", "views", "1", "-", "2", "2", "-", "-", "-"]
    );
    assert_eq!(
        table_row(&text, &["live-g", "views", "1"])[3..6],
        ["-", "2", "2"]
    );
    assert!(!text.contains("Group:"), "only the offsets table: {text}");

    // --members, with --verbose the assignment.
    let (code, text, err) = run(b, &["groups", "describe", "idle-g", "live-g", "--members"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        text.starts_with("GROUP") && text.lines().next().unwrap().ends_with("#PARTITIONS"),
        "{text}"
    );
    let row = table_row(&text, &["live-g"]);
    assert_eq!(row.last(), Some(&"2"), "{text}");
    assert!(err.contains("Group idle-g has no active members."), "{err}");
    let (_, text, _) = run(
        b,
        &["groups", "describe", "live-g", "--members", "--verbose"],
    );
    assert!(
        text.lines().next().unwrap().ends_with("ASSIGNMENT"),
        "{text}"
    );
    assert!(
        table_row(&text, &["live-g"]).ends_with(&["2", "views(0,1)"]),
        "{text}"
    );

    // --state: coordinator, strategy, state, member count.
    let (code, text, err) = run(b, &["groups", "describe", "idle-g", "live-g", "--state"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        text.lines()
            .next()
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>(),
        [
            "GROUP",
            "COORDINATOR",
            "(ID)",
            "ASSIGNMENT-STRATEGY",
            "STATE",
            "#MEMBERS"
        ]
    );
    assert_eq!(
        table_row(&text, &["idle-g"]),
        ["idle-g", b, "(1)", "-", "Empty", "0"]
    );
    let live = table_row(&text, &["live-g"]);
    assert_eq!(live[4..], ["Stable", "1"], "{text}");

    // Bad arguments exit 2; a missing group among several fails (1) after describing the others.
    assert_eq!(
        run(b, &["groups", "describe", "idle-g", "idle-g"]).0,
        Some(2)
    );
    assert_eq!(
        run(b, &["groups", "describe", "idle-g", "--all-groups"]).0,
        Some(2)
    );
    assert_eq!(run(b, &["groups", "describe"]).0, Some(2));
    let (code, text, err) = run(
        b,
        &["groups", "describe", "idle-g", "nosuch-g", "--offsets"],
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(text.contains("idle-g"), "{text}");
    assert!(err.contains("group `nosuch-g` does not exist"), "{err}");
}

#[test]
fn delete_offsets_forgets_some_partitions_and_refuses_a_topic_the_group_consumes() {
    let dir = temp_dir();
    let broker = group_broker(&dir);
    let b = broker.bootstrap.as_str();
    ok(&fjord(
        b,
        &["topics", "create", "old", "--partitions", "2"],
        None,
    ));
    ok(&fjord(b, &["topics", "create", "cur"], None));
    produce_lines(b, "old", 0, &["x".into(), "y".into()]);
    produce_lines(b, "old", 1, &["z".into()]);
    for spec in ["old", "cur"] {
        ok(&fjord(
            b,
            &[
                "groups",
                "reset-offsets",
                "do-g",
                "--topic",
                spec,
                "--to-latest",
                "--execute",
            ],
            None,
        ));
    }
    let (code, text, err) = run(b, &["groups", "delete-offsets", "do-g", "--topic", "old:1"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        table_row(&text, &["do-g", "old", "1"]),
        ["do-g", "old", "1", "Successful"]
    );
    assert!(
        err.contains("Deleted the committed offsets of group do-g on 1 partition"),
        "{err}"
    );
    let d = describe(b, "do-g");
    assert_eq!(
        partition_row(&d, "old", 0).unwrap()["committed_offset"],
        2,
        "{d}"
    );
    assert_eq!(
        partition_row(&d, "old", 1).unwrap()["committed_offset"],
        Value::Null,
        "{d}"
    );
    assert_eq!(
        partition_row(&d, "cur", 0).unwrap()["committed_offset"],
        0,
        "{d}"
    );

    // A group that does not exist, and a topic that does not.
    let (code, _, err) = run(
        b,
        &["groups", "delete-offsets", "nosuch-g", "--topic", "old"],
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("group `nosuch-g` does not exist"), "{err}");
    assert_eq!(
        run(
            b,
            &["groups", "delete-offsets", "do-g", "--topic", "missing"]
        )
        .0,
        Some(4)
    );

    // A member subscribed to `cur`: the broker refuses its offsets there, and the command says why.
    let _member = Spawned::new(Command::new("kcat").args([
        "-b",
        b,
        "-X",
        "session.timeout.ms=6000",
        "-X",
        "heartbeat.interval.ms=500",
        "-X",
        "enable.auto.commit=false",
        "-u",
        "-G",
        "do-g",
        "cur",
    ]));
    wait_for(T, "the kcat member to join", || {
        let d = try_describe(b, "do-g")?;
        (d["state"] == "Stable").then_some(()).ok_or(format!("{d}"))
    });
    let (code, text, err) = run(b, &["groups", "delete-offsets", "do-g", "--topic", "cur"]);
    assert_eq!(code, Some(1), "{text}\n{err}");
    assert!(text.contains("subscribed to the topic"), "{text}");
    assert!(err.contains("stop its consumers first"), "{err}");
}
