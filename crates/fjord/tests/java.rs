//! Apache Kafka's Java client, command-line tools, Kafka Streams and Connect worker (org.apache.kafka:kafka-clients,
//! kafka-tools, kafka-streams and connect-runtime 4.4 from Maven Central) against real `fjord broker` processes: the
//! JUnit classes under `tests/java`, one Maven run per class so they run in parallel under nextest, each with its
//! own build directory, against one broker and (where it makes sense) three. `./test.sh` installs Java and Maven
//! and fills `~/.m2` first.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

/// Runs one JUnit class against `brokers` brokers (1: `fjord broker`; 3: `fjord start --brokers 3`, RF=3).
fn junit(class: &str, brokers: u32) {
    let build = temp_dir();
    let pom = workspace_root().join("tests/java/pom.xml");
    let out = run_bounded(
        Command::new("mvn")
            .args(["-B", "-q", "-f"])
            .arg(&pom)
            .arg(format!("-Dfjord.bin={}", env!("CARGO_BIN_EXE_fjord")))
            .arg(format!("-Dfjord.build.dir={}", build.path().display()))
            .arg(format!("-Dtest={class}"))
            .arg(format!("-Dfjord.brokers={brokers}"))
            .arg("test"),
        Duration::from_secs(600),
    );
    let report = std::fs::read_to_string(
        build
            .path()
            .join(format!("surefire-reports/dev.fjord.{class}.txt")),
    )
    .unwrap_or_default();
    assert!(
        out.status.success(),
        "{class} on {brokers} broker(s) failed ({}):\n{report}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // A run that found no test class would also exit 0: the report proves the tests ran.
    assert!(
        report.contains("Tests run:") && report.contains("Failures: 0, Errors: 0"),
        "{class}: no passing report:\n{report}"
    );
}

#[test]
fn java_producer_and_consumer() {
    junit("ProducerConsumerTest", 1);
}

#[test]
fn java_consumer_groups_classic_cooperative_static_and_kip848() {
    junit("GroupsTest", 1);
}

#[test]
fn java_transactions() {
    junit("TransactionsTest", 1);
}

#[test]
fn java_admin_client() {
    junit("AdminTest", 1);
}

#[test]
fn kafka_command_line_tools() {
    junit("ToolsTest", 1);
}

#[test]
fn kafka_streams_windowed_word_count_exactly_once_across_sigkill() {
    junit("StreamsTest", 1);
}

#[test]
fn kafka_connect_file_source_and_sink_with_restarts() {
    junit("ConnectTest", 1);
}

// The same suites against three brokers where they make sense (AdminTest checks one broker's specifics). All but
// the producer/consumer one are long runs (about 6 minutes of test time together, most of `.ci/run`'s margin): they
// run with `tests/long.sh`, not in `./test.sh`. Three-broker clusters stay covered in CI by librdkafka and
// kafka-python (`cluster_clients.rs`, `cluster_failover.rs`) and by ProducerConsumerTest below.

#[test]
fn java_producer_and_consumer_on_three_brokers() {
    junit("ProducerConsumerTest", 3);
}

#[test]
#[ignore = "long run: tests/long.sh"]
fn java_consumer_groups_on_three_brokers() {
    junit("GroupsTest", 3);
}

#[test]
#[ignore = "long run: tests/long.sh"]
fn java_transactions_on_three_brokers() {
    junit("TransactionsTest", 3);
}

#[test]
#[ignore = "long run: tests/long.sh"]
fn kafka_streams_on_three_brokers() {
    junit("StreamsTest", 3);
}

#[test]
#[ignore = "long run: tests/long.sh"]
fn kafka_connect_on_three_brokers() {
    junit("ConnectTest", 3);
}
