//! The error codes a response carries, for the `fjord_request_errors` metric: every top-level, per-resource and
//! per-partition code, as Kafka's `errorCounts()` collects them. Zeros are kept out by the caller.

use kafka_protocol::messages::{FetchResponse, ResponseKind};

/// The error codes of a Fetch response (top level and per partition).
pub fn fetch_codes(r: &FetchResponse) -> Vec<i16> {
    let mut out = vec![r.error_code];
    out.extend(
        r.responses
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| p.error_code)),
    );
    out
}

/// The error codes of any other response.
pub fn codes(resp: &ResponseKind) -> Vec<i16> {
    let mut out = Vec::new();
    match resp {
        ResponseKind::Produce(r) => out.extend(
            r.responses
                .iter()
                .flat_map(|t| t.partition_responses.iter().map(|p| p.error_code)),
        ),
        ResponseKind::Fetch(r) => out.extend(fetch_codes(r)),
        ResponseKind::ListOffsets(r) => out.extend(
            r.topics
                .iter()
                .flat_map(|t| t.partitions.iter().map(|p| p.error_code)),
        ),
        ResponseKind::Metadata(r) => {
            out.push(r.error_code);
            for t in &r.topics {
                out.push(t.error_code);
                out.extend(t.partitions.iter().map(|p| p.error_code));
            }
        }
        ResponseKind::ApiVersions(r) => out.push(r.error_code),
        ResponseKind::CreateTopics(r) => out.extend(r.topics.iter().map(|t| t.error_code)),
        ResponseKind::DeleteTopics(r) => out.extend(r.responses.iter().map(|t| t.error_code)),
        ResponseKind::DeleteRecords(r) => out.extend(
            r.topics
                .iter()
                .flat_map(|t| t.partitions.iter().map(|p| p.error_code)),
        ),
        ResponseKind::DescribeConfigs(r) => out.extend(r.results.iter().map(|x| x.error_code)),
        ResponseKind::AlterConfigs(r) => out.extend(r.responses.iter().map(|x| x.error_code)),
        ResponseKind::IncrementalAlterConfigs(r) => {
            out.extend(r.responses.iter().map(|x| x.error_code))
        }
        ResponseKind::CreatePartitions(r) => out.extend(r.results.iter().map(|x| x.error_code)),
        ResponseKind::DescribeCluster(r) => out.push(r.error_code),
        ResponseKind::AddRaftVoter(r) => out.push(r.error_code),
        ResponseKind::RemoveRaftVoter(r) => out.push(r.error_code),
        ResponseKind::DescribeQuorum(r) => {
            out.push(r.error_code);
            out.extend(
                r.topics
                    .iter()
                    .flat_map(|t| t.partitions.iter().map(|p| p.error_code)),
            );
        }
        ResponseKind::FindCoordinator(r) => {
            out.push(r.error_code);
            out.extend(r.coordinators.iter().map(|c| c.error_code));
        }
        ResponseKind::JoinGroup(r) => out.push(r.error_code),
        ResponseKind::SyncGroup(r) => out.push(r.error_code),
        ResponseKind::Heartbeat(r) => out.push(r.error_code),
        ResponseKind::LeaveGroup(r) => {
            out.push(r.error_code);
            out.extend(r.members.iter().map(|m| m.error_code));
        }
        ResponseKind::OffsetCommit(r) => out.extend(
            r.topics
                .iter()
                .flat_map(|t| t.partitions.iter().map(|p| p.error_code)),
        ),
        ResponseKind::OffsetFetch(r) => {
            out.push(r.error_code);
            out.extend(
                r.topics
                    .iter()
                    .flat_map(|t| t.partitions.iter().map(|p| p.error_code)),
            );
            for g in &r.groups {
                out.push(g.error_code);
                out.extend(
                    g.topics
                        .iter()
                        .flat_map(|t| t.partitions.iter().map(|p| p.error_code)),
                );
            }
        }
        ResponseKind::OffsetDelete(r) => {
            out.push(r.error_code);
            out.extend(
                r.topics
                    .iter()
                    .flat_map(|t| t.partitions.iter().map(|p| p.error_code)),
            );
        }
        ResponseKind::ListGroups(r) => out.push(r.error_code),
        ResponseKind::DescribeGroups(r) => out.extend(r.groups.iter().map(|g| g.error_code)),
        ResponseKind::DeleteGroups(r) => out.extend(r.results.iter().map(|g| g.error_code)),
        ResponseKind::ConsumerGroupHeartbeat(r) => out.push(r.error_code),
        ResponseKind::ConsumerGroupDescribe(r) => out.extend(r.groups.iter().map(|g| g.error_code)),
        ResponseKind::InitProducerId(r) => out.push(r.error_code),
        ResponseKind::AddPartitionsToTxn(r) => {
            out.push(r.error_code);
            for t in &r.results_by_transaction {
                out.extend(t.topic_results.iter().flat_map(|tr| {
                    tr.results_by_partition
                        .iter()
                        .map(|p| p.partition_error_code)
                }));
            }
            // Versions 0-3 answer one transaction at the top level.
            out.extend(r.results_by_topic_v3_and_below.iter().flat_map(|tr| {
                tr.results_by_partition
                    .iter()
                    .map(|p| p.partition_error_code)
            }));
        }
        ResponseKind::AddOffsetsToTxn(r) => out.push(r.error_code),
        ResponseKind::EndTxn(r) => out.push(r.error_code),
        ResponseKind::TxnOffsetCommit(r) => out.extend(
            r.topics
                .iter()
                .flat_map(|t| t.partitions.iter().map(|p| p.error_code)),
        ),
        ResponseKind::DescribeProducers(r) => out.extend(
            r.topics
                .iter()
                .flat_map(|t| t.partitions.iter().map(|p| p.error_code)),
        ),
        ResponseKind::DescribeTransactions(r) => {
            out.extend(r.transaction_states.iter().map(|t| t.error_code))
        }
        ResponseKind::ListTransactions(r) => out.push(r.error_code),
        ResponseKind::AlterPartitionReassignments(r) => {
            out.push(r.error_code);
            out.extend(
                r.responses
                    .iter()
                    .flat_map(|t| t.partitions.iter().map(|p| p.error_code)),
            );
        }
        ResponseKind::ListPartitionReassignments(r) => out.push(r.error_code),
        _ => {}
    }
    out
}
