//! Dynamic broker configs over the wire: AlterConfigs (which replaces a resource's whole dynamic set) and
//! IncrementalAlterConfigs on BROKER resources, the cluster-wide defaults ("") beside one broker's own values,
//! and what DescribeConfigs then reports.

use std::collections::BTreeMap;

use kafka_protocol::messages::alter_configs_request::{AlterConfigsResource, AlterableConfig};
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::*;

mod common;

use common::{s, start, Client};

const BROKER: i8 = 4;

async fn alter(c: &mut Client, resource: &str, configs: &[(&str, &str)]) -> (i16, String) {
    let req = AlterConfigsRequest::default().with_resources(vec![AlterConfigsResource::default()
        .with_resource_type(BROKER)
        .with_resource_name(s(resource))
        .with_configs(
            configs
                .iter()
                .map(|(k, v)| {
                    AlterableConfig::default()
                        .with_name(s(k))
                        .with_value(Some(s(v)))
                })
                .collect(),
        )]);
    let r = c.send(2, &req).await.responses.remove(0);
    (
        r.error_code,
        r.error_message.map(|m| m.to_string()).unwrap_or_default(),
    )
}

/// name -> (value, source) of a BROKER resource's configs.
async fn describe(c: &mut Client, resource: &str) -> BTreeMap<String, (String, i8)> {
    let req =
        DescribeConfigsRequest::default().with_resources(vec![DescribeConfigsResource::default()
            .with_resource_type(BROKER)
            .with_resource_name(s(resource))
            .with_configuration_keys(None)]);
    let r = c.send(4, &req).await.results.remove(0);
    assert_eq!(r.error_code, 0, "{:?}", r.error_message);
    r.configs
        .into_iter()
        .map(|e| {
            (
                e.name.to_string(),
                (e.value.unwrap_or_default().to_string(), e.config_source),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alter_configs_replaces_only_the_dynamic_set_of_the_resource_it_names() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path()).await;
    let mut c = Client::connect(&broker).await;
    let id = broker.state().config.node_id.to_string();

    assert_eq!(
        alter(
            &mut c,
            "",
            &[
                ("log.retention.ms", "1000"),
                ("log.segment.bytes", "2000000")
            ]
        )
        .await,
        (0, String::new())
    );
    assert_eq!(
        alter(&mut c, &id, &[("log.retention.ms", "5000")]).await,
        (0, String::new())
    );
    let defaults = describe(&mut c, "").await;
    assert_eq!(defaults.len(), 2, "{defaults:?}");
    assert_eq!(defaults["log.retention.ms"], ("1000".to_string(), 3));
    let mine = describe(&mut c, &id).await;
    assert_eq!(mine["log.retention.ms"], ("5000".to_string(), 2));
    assert_eq!(mine["log.segment.bytes"], ("2000000".to_string(), 3));

    // Replacing the defaults' set drops log.segment.bytes there and leaves the broker's own value alone.
    assert_eq!(
        alter(&mut c, "", &[("log.retention.ms", "3000")]).await,
        (0, String::new())
    );
    let defaults = describe(&mut c, "").await;
    assert_eq!(
        defaults.into_iter().collect::<Vec<_>>(),
        [("log.retention.ms".to_string(), ("3000".to_string(), 3))]
    );
    let mine = describe(&mut c, &id).await;
    assert_eq!(mine["log.retention.ms"], ("5000".to_string(), 2));
    assert_ne!(mine["log.segment.bytes"].1, 3, "{mine:?}");
    // And replacing the broker's own set with nothing brings the cluster default back.
    assert_eq!(alter(&mut c, &id, &[]).await, (0, String::new()));
    assert_eq!(
        describe(&mut c, &id).await["log.retention.ms"],
        ("3000".to_string(), 3)
    );

    // Refusals name the reason.
    let (code, msg) = alter(&mut c, "", &[("num.partitions", "3")]).await;
    assert_eq!(
        code,
        kafka_protocol::error::ResponseError::InvalidConfig.code()
    );
    assert!(
        msg.contains("Cannot update these configs dynamically"),
        "{msg}"
    );
    let (code, msg) = alter(&mut c, "", &[("log.retention.ms", "soon")]).await;
    assert_eq!(
        code,
        kafka_protocol::error::ResponseError::InvalidConfig.code()
    );
    assert!(msg.contains("log.retention.ms"));
    let (code, msg) = alter(&mut c, "42", &[("log.retention.ms", "1")]).await;
    assert_eq!(
        code,
        kafka_protocol::error::ResponseError::InvalidRequest.code()
    );
    assert!(msg.contains("Broker 42 is not registered"));
    broker.shutdown().await.unwrap();
}

/// A KIP-848 join (ConsumerGroupHeartbeat v0, epoch 0) of a new member of `group` subscribed to `topics`.
async fn consumer_join(
    c: &mut Client,
    group: &str,
    topics: &[String],
) -> ConsumerGroupHeartbeatResponse {
    c.send(
        0,
        &ConsumerGroupHeartbeatRequest::default()
            .with_group_id(GroupId(s(group)))
            .with_member_epoch(0)
            .with_rebalance_timeout_ms(30_000)
            .with_subscribed_topic_names(Some(topics.iter().map(|t| TopicName(s(t))).collect()))
            .with_topic_partitions(Some(vec![])),
    )
    .await
}

/// A broker whose groups all live on one `__consumer_offsets` partition, with a dynamic `message.max.bytes`
/// of `limit` bytes (lower than the static one, which stays at its default).
async fn one_offsets_partition_limited_to(
    dir: &std::path::Path,
    limit: &str,
) -> (fjord_broker::Broker, Client) {
    let broker = common::start_with(dir, &[("offsets.topic.num.partitions", "1")]).await;
    let mut c = Client::connect(&broker).await;
    assert_eq!(
        alter(&mut c, "", &[("message.max.bytes", limit)]).await,
        (0, String::new())
    );
    (broker, c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kip848_subscription_larger_than_the_dynamic_limit_is_refused_before_anything_changes() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, mut c) = one_offsets_partition_limited_to(dir.path(), "2000").await;
    // 30 names of 100 characters: a member record of about 3,000 bytes, under the static limit (1 MiB) and
    // over the dynamic one.
    let topics: Vec<String> = (0..30).map(|i| format!("{i:0>100}")).collect();
    let r = consumer_join(&mut c, "big", &topics).await;
    assert_eq!(r.error_code, 42, "INVALID_REQUEST: {r:?}");
    let message = r.error_message.map(|m| m.to_string()).unwrap_or_default();
    assert!(
        message.contains("max.message.bytes") && message.contains("2000"),
        "{message}"
    );
    // Nothing was kept: another group on the same partition is written and answered.
    common::create_topic(&mut c, "t", 1).await;
    let ok = consumer_join(&mut c, "small", &["t".to_string()]).await;
    assert_eq!(ok.error_code, 0, "{ok:?}");
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kip848_group_whose_records_the_log_refuses_does_not_hold_back_the_groups_beside_it() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, mut c) = one_offsets_partition_limited_to(dir.path(), "700").await;
    // One member owning 200 partitions: its assignment records (4 bytes a partition) exceed the limit, though
    // its subscription record is small.
    common::create_topic(&mut c, "wide", 200).await;
    common::create_topic(&mut c, "t", 1).await;
    let wide = consumer_join(&mut c, "wide", &["wide".to_string()]).await;
    assert_ne!(wide.error_code, 0, "the log refuses its records: {wide:?}");
    // The refused records stay pending (they are retried), but the other group on the partition is written.
    for group in ["small-1", "small-2"] {
        let ok = consumer_join(&mut c, group, &["t".to_string()]).await;
        assert_eq!(ok.error_code, 0, "{group}: {ok:?}");
        assert_eq!(ok.member_epoch, 1, "{group}: {ok:?}");
    }
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offset_commit_too_large_for_the_log_is_answered_invalid_commit_offset_size_not_a_retriable_code(
) {
    use kafka_protocol::messages::offset_commit_request::{
        OffsetCommitRequestPartition, OffsetCommitRequestTopic,
    };
    let dir = tempfile::tempdir().unwrap();
    let (broker, mut c) = one_offsets_partition_limited_to(dir.path(), "700").await;
    common::create_topic(&mut c, "t", 20).await;
    // A standalone commit (no generation) of 20 partitions with 100 bytes of metadata each: one batch of more
    // than 2,000 bytes, which the log refuses whole (a commit is written atomically, never split).
    let partitions = (0..20)
        .map(|p| {
            OffsetCommitRequestPartition::default()
                .with_partition_index(p)
                .with_committed_offset(1)
                .with_committed_metadata(Some(s(&"m".repeat(100))))
        })
        .collect();
    let r = c
        .send(
            8,
            &OffsetCommitRequest::default()
                .with_group_id(GroupId(s("g")))
                .with_generation_id_or_member_epoch(-1)
                .with_topics(vec![OffsetCommitRequestTopic::default()
                    .with_name(TopicName(s("t")))
                    .with_partitions(partitions)]),
        )
        .await;
    let codes: Vec<i16> = r.topics[0]
        .partitions
        .iter()
        .map(|p| p.error_code)
        .collect();
    assert_eq!(
        codes,
        vec![28; 20],
        "INVALID_COMMIT_OFFSET_SIZE for every partition"
    );
    // Nothing of the refused commit was kept: no partition has a committed offset.
    use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
    let fetched = c
        .send(
            5,
            &OffsetFetchRequest::default()
                .with_group_id(GroupId(s("g")))
                .with_topics(Some(vec![OffsetFetchRequestTopic::default()
                    .with_name(TopicName(s("t")))
                    .with_partition_indexes((0..20).collect())])),
        )
        .await;
    let offsets: Vec<i64> = fetched.topics[0]
        .partitions
        .iter()
        .map(|p| p.committed_offset)
        .collect();
    assert_eq!(offsets, vec![-1; 20]);
    broker.shutdown().await.unwrap();
}

/// The dashboard's users are a secret: DescribeConfigs lists the key as sensitive, without its value (as Kafka
/// does for its PASSWORD configs), while other configs keep theirs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_users_are_described_as_sensitive_without_their_value() {
    let dir = tempfile::tempdir().unwrap();
    let broker = common::start_with(
        dir.path(),
        &[
            ("dashboard.auth.basic.users", "alice:hunter2"),
            ("dashboard.auth", "basic"),
        ],
    )
    .await;
    let mut c = Client::connect(&broker).await;
    let req = DescribeConfigsRequest::default()
        .with_resources(vec![DescribeConfigsResource::default()
            .with_resource_type(BROKER)
            .with_resource_name(s(&broker.state().config.node_id.to_string()))
            .with_configuration_keys(None)])
        .with_include_synonyms(true);
    let r = c.send(4, &req).await.results.remove(0);
    assert_eq!(r.error_code, 0, "{:?}", r.error_message);
    let users = r
        .configs
        .iter()
        .find(|e| e.name.as_str() == "dashboard.auth.basic.users")
        .expect("listed");
    assert!(users.is_sensitive);
    assert_eq!(users.value, None);
    assert!(!format!("{:?}", r.configs).contains("hunter2"));
    let mode = r
        .configs
        .iter()
        .find(|e| e.name.as_str() == "dashboard.auth")
        .expect("listed");
    assert!(!mode.is_sensitive);
    assert_eq!(mode.value.as_deref(), Some("basic"));
}
