//! `/ready` and the scrape-time metrics against an in-process broker: a log directory taken offline by an I/O
//! error makes the broker not ready (it stays alive), and the partition gauges come from memory.

use bytes::Bytes;

mod common;

use common::{create_topic, start_with, Client};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_with_an_offline_log_dir_is_alive_but_not_ready() {
    let root = tempfile::tempdir().unwrap();
    let (a, b) = (root.path().join("a"), root.path().join("b"));
    let dirs = format!("{},{}", a.display(), b.display());
    let broker = start_with(&a, &[("log.dirs", &dirs)]).await;
    let mut c = Client::connect(&broker).await;
    create_topic(&mut c, "t", 2).await;
    let state = broker.state();
    assert_eq!(state.readiness(), Ok(()));

    // t-1 lives in b (t-0 in a): its next fsync fails, which takes b offline.
    let p1 = state.partitions.get("t", 1).unwrap();
    assert_eq!(p1.log_dir(), b.as_path());
    let batch: Bytes =
        fjord_broker::groups::encode_batch(&[(Bytes::from_static(b"k"), None)], None).unwrap();
    let info = p1.append(batch).unwrap();
    p1.fail_next_fsync_for_test();
    assert!(p1.wait_durable(info.last_offset + 1).await.is_err());

    let why = state.readiness().unwrap_err();
    assert!(why.contains(&b.display().to_string()), "{why}");
    assert!(!why.contains(&format!("{},", a.display())), "{why}");
    // The metrics still scrape, and the partition in the healthy directory is still reported.
    let text = broker.metrics_text();
    assert!(
        text.contains("fjord_log_end_offset{topic=\"t\",partition=\"0\"} 0"),
        "{text}"
    );
    broker.shutdown().await.unwrap();
}
