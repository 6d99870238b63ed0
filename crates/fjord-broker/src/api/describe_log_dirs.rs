//! DescribeLogDirs (key 35): this broker's log directories (`log.dirs`), the partitions each holds with their
//! size, and the directory's total and usable bytes (v4), as `kafka-log-dirs.sh --describe` and the AdminClient's
//! `describeLogDirs` ask every broker. A directory that failed is answered with KAFKA_STORAGE_ERROR and no
//! partitions, as Kafka does. Fjord never moves a replica between directories (no future logs), so
//! `is_future_key` is false and the offset lag is how far the log end is below the high watermark (0 normally).

use std::collections::{BTreeMap, BTreeSet};

use kafka_protocol::error::ResponseError as E;
use kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use kafka_protocol::messages::{DescribeLogDirsRequest, DescribeLogDirsResponse, TopicName};

use super::{str_bytes, Ctx};

/// (total, usable) bytes of the file system holding `path`; Kafka's -1 when unknown.
fn volume_bytes(path: &std::path::Path) -> (i64, i64) {
    match rustix::fs::statvfs(path) {
        Ok(s) => {
            let bytes =
                |blocks: u64| i64::try_from(blocks.saturating_mul(s.f_frsize)).unwrap_or(i64::MAX);
            (bytes(s.f_blocks), bytes(s.f_bavail))
        }
        Err(_) => (-1, -1),
    }
}

pub fn handle(ctx: &Ctx<'_>, req: DescribeLogDirsRequest) -> DescribeLogDirsResponse {
    let state = ctx.state;
    // None: every partition (Kafka's null topics).
    let wanted: Option<BTreeSet<(String, i32)>> = req.topics.map(|topics| {
        topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| (t.topic.0.to_string(), *p)))
            .collect()
    });
    let dirs = state.partitions.dirs();
    let all = state.partitions.all();
    let mut results = Vec::with_capacity(dirs.len());
    for i in 0..dirs.len() {
        let path = dirs.path(i);
        let log_dir = str_bytes(&path.display().to_string());
        if dirs.is_offline(i) {
            results.push(
                DescribeLogDirsResult::default()
                    .with_error_code(E::KafkaStorageError.code())
                    .with_log_dir(log_dir)
                    .with_total_bytes(-1)
                    .with_usable_bytes(-1),
            );
            continue;
        }
        let mut topics: BTreeMap<&str, Vec<DescribeLogDirsPartition>> = BTreeMap::new();
        for p in &all {
            if p.log_dir() != path {
                continue;
            }
            if let Some(w) = &wanted {
                if !w.contains(&(p.topic.clone(), p.index)) {
                    continue;
                }
            }
            let lag = (p.high_watermark() - p.log_end_offset()).max(0);
            topics.entry(&p.topic).or_default().push(
                DescribeLogDirsPartition::default()
                    .with_partition_index(p.index)
                    .with_partition_size(i64::try_from(p.size_bytes()).unwrap_or(i64::MAX))
                    .with_offset_lag(lag)
                    .with_is_future_key(false),
            );
        }
        // statvfs can block on a hung disk: off the async workers.
        let (total, usable) = crate::blocking(|| volume_bytes(path));
        results.push(
            DescribeLogDirsResult::default()
                .with_log_dir(log_dir)
                .with_topics(
                    topics
                        .into_iter()
                        .map(|(name, mut partitions)| {
                            partitions.sort_by_key(|p| p.partition_index);
                            DescribeLogDirsTopic::default()
                                .with_name(TopicName(str_bytes(name)))
                                .with_partitions(partitions)
                        })
                        .collect(),
                )
                .with_total_bytes(total)
                .with_usable_bytes(usable),
        );
    }
    DescribeLogDirsResponse::default().with_results(results)
}
