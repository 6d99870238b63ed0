//! DescribeTopicPartitions (key 75, KIP-966) against an in-process broker: the paging by cursor that Kafka 4's
//! AdminClient drives, name order, unknown topics and the request errors Kafka gives.

mod common;

use common::{create_topic, s, start, Client};
use kafka_protocol::error::ResponseError as E;
use kafka_protocol::messages::describe_topic_partitions_request::{Cursor, TopicRequest};
use kafka_protocol::messages::*;

fn request(
    topics: &[&str],
    limit: i32,
    cursor: Option<(&str, i32)>,
) -> DescribeTopicPartitionsRequest {
    DescribeTopicPartitionsRequest::default()
        .with_topics(
            topics
                .iter()
                .map(|t| TopicRequest::default().with_name(TopicName(s(t))))
                .collect(),
        )
        .with_response_partition_limit(limit)
        .with_cursor(cursor.map(|(t, p)| {
            Cursor::default()
                .with_topic_name(TopicName(s(t)))
                .with_partition_index(p)
        }))
}

/// (topic, error, partition indexes) per topic, and the next cursor.
type Page = (Vec<(String, i16, Vec<i32>)>, Option<(String, i32)>);

async fn page(c: &mut Client, req: &DescribeTopicPartitionsRequest) -> Page {
    let r = c.send(0, req).await;
    let topics = r
        .topics
        .iter()
        .map(|t| {
            (
                t.name.as_ref().map(|n| n.0.to_string()).unwrap_or_default(),
                t.error_code,
                t.partitions.iter().map(|p| p.partition_index).collect(),
            )
        })
        .collect();
    let cursor = r
        .next_cursor
        .map(|c| (c.topic_name.0.to_string(), c.partition_index));
    (topics, cursor)
}

fn t(name: &str, code: i16, parts: &[i32]) -> (String, i16, Vec<i32>) {
    (name.to_string(), code, parts.to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_follow_the_cursor_in_name_order() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path()).await;
    let mut c = Client::connect(&broker).await;
    for (name, n) in [("b", 2), ("a", 3), ("c", 1)] {
        create_topic(&mut c, name, n).await;
    }
    // Every topic, four partitions a page.
    let (topics, cursor) = page(&mut c, &request(&[], 4, None)).await;
    assert_eq!(topics, vec![t("a", 0, &[0, 1, 2]), t("b", 0, &[0])]);
    assert_eq!(cursor, Some(("b".to_string(), 1)));
    let (topics, cursor) = page(&mut c, &request(&[], 4, Some(("b", 1)))).await;
    assert_eq!(topics, vec![t("b", 0, &[1]), t("c", 0, &[0])]);
    assert_eq!(cursor, None);
    // A page that ends exactly at a topic's end points at the next topic's first partition.
    let (topics, cursor) = page(&mut c, &request(&[], 3, None)).await;
    assert_eq!(topics, vec![t("a", 0, &[0, 1, 2])]);
    assert_eq!(cursor, Some(("b".to_string(), 0)));
    // No limit asked for: the broker's max.request.partition.size.limit (2000) applies.
    let (topics, cursor) = page(&mut c, &request(&[], 0, None)).await;
    assert_eq!(topics.len(), 3);
    assert_eq!(cursor, None);
    // Named topics come back sorted, an unknown one with its error (and nothing is auto-created).
    let (topics, _) = page(&mut c, &request(&["c", "zz", "a"], 100, None)).await;
    assert_eq!(
        topics,
        vec![
            t("a", 0, &[0, 1, 2]),
            t("c", 0, &[0]),
            t("zz", E::UnknownTopicOrPartition.code(), &[])
        ]
    );
    let (topics, _) = page(&mut c, &request(&["zz"], 100, None)).await;
    assert_eq!(
        topics,
        vec![t("zz", E::UnknownTopicOrPartition.code(), &[])]
    );
    // A cursor inside the named topics skips what comes before it.
    let (topics, _) = page(&mut c, &request(&["a", "c"], 100, Some(("a", 2)))).await;
    assert_eq!(topics, vec![t("a", 0, &[2]), t("c", 0, &[0])]);
    // A cursor outside them fails the request, every topic with INVALID_REQUEST, as Kafka does.
    let (topics, cursor) = page(&mut c, &request(&["a", "c"], 100, Some(("b", 0)))).await;
    assert_eq!(
        topics,
        vec![
            t("a", E::InvalidRequest.code(), &[]),
            t("c", E::InvalidRequest.code(), &[])
        ]
    );
    assert_eq!(cursor, None);
    // The partition details match Metadata's.
    let r = c.send(0, &request(&["a"], 10, None)).await;
    let p = &r.topics[0].partitions[1];
    assert_eq!(
        (
            p.error_code,
            p.leader_id.0,
            p.replica_nodes.len(),
            p.isr_nodes.len()
        ),
        (0, 1, 1, 1)
    );
    assert!(r.topics[0].topic_id != uuid::Uuid::nil());
    broker.shutdown().await.unwrap();
}
