//! One handler per Kafka API, and the table of versions each one serves.
//!
//! [`SUPPORTED`] is the single source of truth for ApiVersions and for version checks: a request for an API
//! that is not in the table, or at a version outside its range, never reaches a handler. Ranges start at the
//! lowest version the `kafka-protocol` codec decodes, which is also what Kafka 4.x itself serves (KIP-896
//! removed the older ones), and overlap every version librdkafka probes to enable message format v2 and zstd.

mod add_offsets_to_txn;
mod add_partitions_to_txn;
mod add_raft_voter;
mod alter_configs;
mod alter_partition_reassignments;
mod api_versions;
mod consumer_group_describe;
mod consumer_group_heartbeat;
mod create_partitions;
mod create_topics;
mod delete_groups;
mod delete_records;
mod delete_topics;
mod describe_cluster;
mod describe_configs;
mod describe_groups;
mod describe_log_dirs;
mod describe_producers;
mod describe_quorum;
mod describe_topic_partitions;
mod describe_transactions;
mod elect_leaders;
mod end_txn;
mod errors;
mod fetch;
mod find_coordinator;
mod heartbeat;
mod init_producer_id;
mod join_group;
mod leave_group;
mod list_groups;
mod list_offsets;
mod list_partition_reassignments;
mod list_transactions;
mod metadata;
mod offset_commit;
mod offset_delete;
mod offset_fetch;
mod offset_for_leader_epoch;
mod produce;
mod remove_raft_voter;
mod sync_group;
mod txn_offset_commit;
mod write_txn_markers;

/// The effective topic configs, for the dashboard as for DescribeConfigs.
pub use describe_configs::topic_entries;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use crate::metrics::RequestLabels;
use crate::BrokerState;

/// (API, lowest version, highest version) served by this broker.
pub static SUPPORTED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 9),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 8),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::ApiVersions, 0, 3),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::DeleteRecords, 0, 2),
    (ApiKey::OffsetForLeaderEpoch, 2, 4),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::AlterConfigs, 0, 2),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::DescribeCluster, 0, 2),
    (ApiKey::DescribeLogDirs, 1, 4),
    // The metadata quorum (KRaft's), answered by any broker as Kafka's forward it to the active controller.
    (ApiKey::DescribeQuorum, 0, 2),
    (ApiKey::DescribeTopicPartitions, 0, 0),
    // KIP-853's voter changes, answered by any broker (Kafka's brokers forward them to the active controller).
    (ApiKey::AddRaftVoter, 0, 0),
    (ApiKey::RemoveRaftVoter, 0, 0),
    (ApiKey::FindCoordinator, 0, 5),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::OffsetCommit, 2, 9),
    (ApiKey::OffsetFetch, 1, 9),
    (ApiKey::OffsetDelete, 0, 0),
    (ApiKey::ListGroups, 0, 5),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::ConsumerGroupHeartbeat, 0, 1),
    (ApiKey::ConsumerGroupDescribe, 0, 1),
    (ApiKey::InitProducerId, 0, 5),
    (ApiKey::AddPartitionsToTxn, 0, 5),
    (ApiKey::AddOffsetsToTxn, 0, 4),
    // v5 of EndTxn and TxnOffsetCommit belong to transactions v2 (KIP-890 part 2), not offered.
    (ApiKey::EndTxn, 0, 4),
    (ApiKey::WriteTxnMarkers, 1, 1),
    (ApiKey::ElectLeaders, 0, 2),
    (ApiKey::AlterPartitionReassignments, 0, 1),
    (ApiKey::ListPartitionReassignments, 0, 0),
    (ApiKey::TxnOffsetCommit, 0, 4),
    (ApiKey::DescribeProducers, 0, 0),
    (ApiKey::DescribeTransactions, 0, 0),
    (ApiKey::ListTransactions, 0, 1),
];

pub fn supported_range(key: ApiKey) -> Option<(i16, i16)> {
    SUPPORTED
        .iter()
        .find(|(k, _, _)| *k == key)
        .map(|(_, lo, hi)| (*lo, *hi))
}

/// What the connection does after a frame.
pub enum Outcome {
    /// Write this complete frame (length prefix included), given as consecutive chunks so that record data
    /// can be written from the buffers it was read into, without copying it into the response.
    Respond {
        api: RequestLabels,
        body: Vec<Bytes>,
    },
    /// acks=0 produce: Kafka sends nothing back.
    NoResponse { api: RequestLabels },
    /// The frame cannot be answered; close the connection (Kafka does the same).
    Close(String),
}

/// A request either answered already, or waiting on something (acks=all durability) that the connection may
/// overlap with the next requests.
pub enum Handled {
    Done(Outcome),
    Pending(std::pin::Pin<Box<dyn std::future::Future<Output = Outcome> + Send + 'static>>),
}

impl From<Outcome> for Handled {
    fn from(o: Outcome) -> Self {
        Handled::Done(o)
    }
}

/// What a handler sees of the request besides its body.
pub struct Ctx<'a> {
    pub state: &'a Arc<BrokerState>,
    pub version: i16,
    pub client_id: Option<&'a str>,
    pub peer: SocketAddr,
}

/// The controller id Metadata and DescribeCluster report: the raft leader when it is a live broker (a combined
/// node); otherwise, as Kafka's KRaft brokers do, a broker that forwards to it: this one. A client only ever
/// sends controller requests to a broker it can reach, and a controller-only leader serves no clients.
pub(crate) fn reported_controller(ctx: &Ctx<'_>, state: &fjord_meta::ClusterState) -> i32 {
    if state.brokers.contains_key(&state.controller_id) && state.is_live(state.controller_id) {
        state.controller_id
    } else {
        ctx.state.config.node_id
    }
}

pub(crate) fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

/// The API key of a frame, read without decoding it.
pub fn peek_api_key(frame: &[u8]) -> Option<ApiKey> {
    let raw = i16::from_be_bytes([*frame.first()?, *frame.get(1)?]);
    ApiKey::try_from(raw).ok()
}

/// Decodes, dispatches and encodes one request frame.
pub async fn handle_frame(state: &Arc<BrokerState>, frame: Bytes, peer: SocketAddr) -> Handled {
    match decode_and_dispatch(state, frame, peer).await {
        Ok(h) => h,
        Err(o) => Handled::Done(o),
    }
}

async fn decode_and_dispatch(
    state: &Arc<BrokerState>,
    mut frame: Bytes,
    peer: SocketAddr,
) -> Result<Handled, Outcome> {
    if frame.len() < 8 {
        return Err(Outcome::Close(format!(
            "frame of {} bytes is too short for a request header",
            frame.len()
        )));
    }
    let raw_key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    let Ok(key) = ApiKey::try_from(raw_key) else {
        return Err(Outcome::Close(format!("unknown API key {raw_key}")));
    };
    let labels = RequestLabels {
        request: format!("{key:?}"),
    };
    let Some((lo, hi)) = supported_range(key) else {
        return Err(Outcome::Close(format!("API {key:?} is not supported")));
    };
    if version < lo || version > hi {
        if key == ApiKey::ApiVersions {
            // KIP-511: answer an ApiVersions request of an unknown version with a v0 response carrying
            // UNSUPPORTED_VERSION and our ranges, so the client can retry with a version we speak.
            let resp = api_versions::unsupported_version_response();
            return Err(encode_counted(
                state,
                labels,
                key,
                0,
                correlation_id,
                ResponseKind::ApiVersions(resp),
            ));
        }
        return Err(Outcome::Close(format!(
            "{key:?} v{version} is not supported (supported: v{lo}-v{hi})"
        )));
    }
    let header = match RequestHeader::decode(&mut frame, key.request_header_version(version)) {
        Ok(h) => h,
        Err(e) => {
            return Err(Outcome::Close(format!(
                "malformed {key:?} v{version} header: {e}"
            )))
        }
    };
    let request = match RequestKind::decode(key, &mut frame, version) {
        Ok(r) => r,
        Err(e) => {
            return Err(Outcome::Close(format!(
                "malformed {key:?} v{version} request: {e}"
            )))
        }
    };
    state.metrics.requests.get_or_create(&labels).inc();
    let client_id = header.client_id.as_deref();
    tracing::trace!(api_key = ?key, api_version = version, correlation_id, client_id, "request");
    let ctx = Ctx {
        state,
        version,
        client_id,
        peer,
    };
    let response = match request {
        RequestKind::ApiVersions(r) => ResponseKind::ApiVersions(api_versions::handle(&ctx, r)),
        RequestKind::Metadata(r) => ResponseKind::Metadata(metadata::handle(&ctx, r).await),
        RequestKind::Produce(r) => {
            let prepared = produce::prepare(&ctx, r).await;
            let metrics_state = state.clone();
            let finish = move |resp: Option<_>| match resp {
                Some(resp) => encode_counted(
                    &metrics_state,
                    labels,
                    key,
                    version,
                    correlation_id,
                    ResponseKind::Produce(resp),
                ),
                None => Outcome::NoResponse { api: labels },
            };
            if prepared.is_complete() {
                return Ok(Handled::Done(finish(prepared.complete().await)));
            }
            return Ok(Handled::Pending(Box::pin(async move {
                finish(prepared.complete().await)
            })));
        }
        RequestKind::Fetch(r) => {
            let resp = fetch::handle(&ctx, r).await;
            state
                .metrics
                .record_errors(&labels, &errors::fetch_codes(&resp));
            return Ok(Handled::Done(encode_fetch_response(
                labels,
                version,
                correlation_id,
                resp,
            )));
        }
        RequestKind::ListOffsets(r) => ResponseKind::ListOffsets(list_offsets::handle(&ctx, r)),
        RequestKind::CreateTopics(r) => {
            ResponseKind::CreateTopics(create_topics::handle(&ctx, r).await)
        }
        RequestKind::DeleteTopics(r) => {
            ResponseKind::DeleteTopics(delete_topics::handle(&ctx, r).await)
        }
        RequestKind::CreatePartitions(r) => {
            ResponseKind::CreatePartitions(create_partitions::handle(&ctx, r).await)
        }
        RequestKind::DescribeConfigs(r) => {
            ResponseKind::DescribeConfigs(describe_configs::handle(&ctx, r))
        }
        RequestKind::AlterConfigs(r) => {
            ResponseKind::AlterConfigs(alter_configs::handle_alter(&ctx, r).await)
        }
        RequestKind::IncrementalAlterConfigs(r) => {
            ResponseKind::IncrementalAlterConfigs(alter_configs::handle_incremental(&ctx, r).await)
        }
        RequestKind::OffsetForLeaderEpoch(r) => {
            ResponseKind::OffsetForLeaderEpoch(offset_for_leader_epoch::handle(&ctx, r))
        }
        RequestKind::DeleteRecords(r) => {
            ResponseKind::DeleteRecords(delete_records::handle(&ctx, r).await)
        }
        RequestKind::FindCoordinator(r) => {
            ResponseKind::FindCoordinator(find_coordinator::handle(&ctx, r).await)
        }
        RequestKind::JoinGroup(r) => ResponseKind::JoinGroup(join_group::handle(&ctx, r).await),
        RequestKind::SyncGroup(r) => ResponseKind::SyncGroup(sync_group::handle(&ctx, r).await),
        RequestKind::Heartbeat(r) => ResponseKind::Heartbeat(heartbeat::handle(&ctx, r)),
        RequestKind::LeaveGroup(r) => ResponseKind::LeaveGroup(leave_group::handle(&ctx, r).await),
        RequestKind::OffsetCommit(r) => {
            ResponseKind::OffsetCommit(offset_commit::handle(&ctx, r).await)
        }
        RequestKind::OffsetFetch(r) => ResponseKind::OffsetFetch(offset_fetch::handle(&ctx, r)),
        RequestKind::OffsetDelete(r) => {
            ResponseKind::OffsetDelete(offset_delete::handle(&ctx, r).await)
        }
        RequestKind::ListGroups(r) => ResponseKind::ListGroups(list_groups::handle(&ctx, r)),
        RequestKind::DescribeGroups(r) => {
            ResponseKind::DescribeGroups(describe_groups::handle(&ctx, r))
        }
        RequestKind::DeleteGroups(r) => {
            ResponseKind::DeleteGroups(delete_groups::handle(&ctx, r).await)
        }
        RequestKind::ConsumerGroupHeartbeat(r) => {
            ResponseKind::ConsumerGroupHeartbeat(consumer_group_heartbeat::handle(&ctx, r).await)
        }
        RequestKind::ConsumerGroupDescribe(r) => {
            ResponseKind::ConsumerGroupDescribe(consumer_group_describe::handle(&ctx, r))
        }
        RequestKind::InitProducerId(r) => {
            ResponseKind::InitProducerId(init_producer_id::handle(&ctx, r).await)
        }
        RequestKind::AddPartitionsToTxn(r) => {
            ResponseKind::AddPartitionsToTxn(add_partitions_to_txn::handle(&ctx, r).await)
        }
        RequestKind::AddOffsetsToTxn(r) => {
            ResponseKind::AddOffsetsToTxn(add_offsets_to_txn::handle(&ctx, r).await)
        }
        RequestKind::EndTxn(r) => ResponseKind::EndTxn(end_txn::handle(&ctx, r).await),
        RequestKind::ElectLeaders(r) => {
            ResponseKind::ElectLeaders(elect_leaders::handle(&ctx, r).await)
        }
        RequestKind::AlterPartitionReassignments(r) => ResponseKind::AlterPartitionReassignments(
            alter_partition_reassignments::handle(&ctx, r).await,
        ),
        RequestKind::ListPartitionReassignments(r) => ResponseKind::ListPartitionReassignments(
            list_partition_reassignments::handle(&ctx, r).await,
        ),
        RequestKind::WriteTxnMarkers(r) => {
            ResponseKind::WriteTxnMarkers(write_txn_markers::handle(&ctx, r).await)
        }
        RequestKind::TxnOffsetCommit(r) => {
            ResponseKind::TxnOffsetCommit(txn_offset_commit::handle(&ctx, r).await)
        }
        RequestKind::DescribeProducers(r) => {
            ResponseKind::DescribeProducers(describe_producers::handle(&ctx, r))
        }
        RequestKind::DescribeTransactions(r) => {
            ResponseKind::DescribeTransactions(describe_transactions::handle(&ctx, r).await)
        }
        RequestKind::ListTransactions(r) => {
            ResponseKind::ListTransactions(list_transactions::handle(&ctx, r).await)
        }
        RequestKind::DescribeCluster(r) => {
            ResponseKind::DescribeCluster(describe_cluster::handle(&ctx, r))
        }
        RequestKind::DescribeLogDirs(r) => {
            ResponseKind::DescribeLogDirs(describe_log_dirs::handle(&ctx, r))
        }
        RequestKind::DescribeQuorum(r) => {
            ResponseKind::DescribeQuorum(describe_quorum::handle(&ctx, r).await)
        }
        RequestKind::DescribeTopicPartitions(r) => {
            ResponseKind::DescribeTopicPartitions(describe_topic_partitions::handle(&ctx, r))
        }
        RequestKind::AddRaftVoter(r) => {
            ResponseKind::AddRaftVoter(add_raft_voter::handle(&ctx, r).await)
        }
        RequestKind::RemoveRaftVoter(r) => {
            ResponseKind::RemoveRaftVoter(remove_raft_voter::handle(&ctx, r).await)
        }
        _ => return Err(Outcome::Close(format!("no handler for {key:?}"))),
    };
    Ok(Handled::Done(encode_counted(
        state,
        labels,
        key,
        version,
        correlation_id,
        response,
    )))
}

/// [`encode_response`], counting the response's error codes in `fjord_request_errors` first.
fn encode_counted(
    state: &BrokerState,
    api: RequestLabels,
    key: ApiKey,
    version: i16,
    correlation_id: i32,
    response: ResponseKind,
) -> Outcome {
    state.metrics.record_errors(&api, &errors::codes(&response));
    encode_response(api, key, version, correlation_id, response)
}

fn encode_response(
    api: RequestLabels,
    key: ApiKey,
    version: i16,
    correlation_id: i32,
    response: ResponseKind,
) -> Outcome {
    match encode_frame(key, version, correlation_id, &response) {
        Ok(buf) => Outcome::Respond {
            api,
            body: vec![buf.freeze()],
        },
        Err(reason) => Outcome::Close(reason),
    }
}

/// The whole response frame, its length prefix filled in.
fn encode_frame(
    key: ApiKey,
    version: i16,
    correlation_id: i32,
    response: &ResponseKind,
) -> Result<BytesMut, String> {
    let mut buf = BytesMut::with_capacity(256);
    buf.put_i32(0); // length, patched below
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    // ApiVersions responses always use header v0 so that a client can parse them before it knows our versions.
    let header_version = key.response_header_version(version);
    header
        .encode(&mut buf, header_version)
        .map_err(|e| format!("encoding response header failed: {e}"))?;
    response
        .encode(&mut buf, version)
        .map_err(|e| format!("encoding {key:?} v{version} response failed: {e}"))?;
    let len = (buf.len() - 4) as i32;
    buf[0..4].copy_from_slice(&len.to_be_bytes());
    Ok(buf)
}

/// Record data up to this size is copied into the response; larger data is written from its own buffer.
const FETCH_INLINE_MAX: usize = 4096;

/// Encodes a Fetch response without copying large record data: each such `records` value is swapped for a
/// unique 18-byte placeholder (a random 16-byte tag and its index) before encoding, and the frame is then cut
/// at the placeholders, which become the record buffers themselves with their real length prefixes.
fn encode_fetch_response(
    api: RequestLabels,
    version: i16,
    correlation_id: i32,
    mut resp: kafka_protocol::messages::FetchResponse,
) -> Outcome {
    let tag = *uuid::Uuid::new_v4().as_bytes();
    let mut moved: Vec<Bytes> = Vec::new();
    for p in resp
        .responses
        .iter_mut()
        .flat_map(|t| t.partitions.iter_mut())
    {
        if let Some(records) = p.records.as_mut() {
            if records.len() > FETCH_INLINE_MAX && moved.len() < usize::from(u16::MAX) {
                let mut placeholder = tag.to_vec();
                placeholder.extend_from_slice(&(moved.len() as u16).to_be_bytes());
                moved.push(std::mem::replace(records, Bytes::from(placeholder)));
            }
        }
    }
    let key = ApiKey::Fetch;
    let mut buf = match encode_frame(key, version, correlation_id, &ResponseKind::Fetch(resp)) {
        Ok(b) => b,
        Err(reason) => return Outcome::Close(reason),
    };
    if moved.is_empty() {
        return Outcome::Respond {
            api,
            body: vec![buf.freeze()],
        };
    }
    // The placeholder's length prefix: INT32 up to v11, COMPACT (unsigned varint of length + 1) from v12,
    // where 18 + 1 fits one byte.
    let prefix = if version >= 12 { 1 } else { 4 };
    let mut cuts = Vec::with_capacity(moved.len());
    let mut from = 0;
    while let Some(i) = buf[from..].windows(tag.len()).position(|w| w == tag) {
        let at = from + i;
        let idx = u16::from_be_bytes([buf[at + 16], buf[at + 17]]) as usize;
        cuts.push((at, idx));
        from = at + 18;
    }
    if cuts.len() != moved.len()
        || cuts
            .iter()
            .any(|&(at, idx)| idx >= moved.len() || at < prefix)
    {
        return Outcome::Close("internal error: splicing record data into a fetch response".into());
    }
    let mut total = buf.len() - 4;
    let mut prefixes = Vec::with_capacity(cuts.len());
    for &(_, idx) in &cuts {
        let len = moved[idx].len();
        let mut p = BytesMut::with_capacity(5);
        if version >= 12 {
            let mut v = len as u64 + 1;
            while v >= 0x80 {
                p.put_u8((v as u8) | 0x80);
                v >>= 7;
            }
            p.put_u8(v as u8);
        } else {
            p.put_i32(len as i32);
        }
        total = total - prefix - 18 + p.len() + len;
        prefixes.push(p.freeze());
    }
    buf[0..4].copy_from_slice(&(total as i32).to_be_bytes());
    let buf = buf.freeze();
    let mut body = Vec::with_capacity(cuts.len() * 3 + 1);
    let mut start = 0;
    for (&(at, idx), p) in cuts.iter().zip(prefixes) {
        body.push(buf.slice(start..at - prefix));
        body.push(p);
        body.push(moved[idx].clone());
        start = at + 18;
    }
    body.push(buf.slice(start..));
    Outcome::Respond { api, body }
}

/// Checks that decoding arbitrary bytes as any supported request never panics.
#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn decoding_arbitrary_request_bodies_never_panics(
            idx in 0usize..SUPPORTED.len(),
            version_off in 0i16..20,
            body in proptest::collection::vec(any::<u8>(), 0..512),
        ) {
            let (key, lo, hi) = SUPPORTED[idx];
            let version = lo + version_off % (hi - lo + 1);
            let mut b = Bytes::from(body);
            let _ = RequestHeader::decode(&mut b.clone(), key.request_header_version(version));
            let _ = RequestKind::decode(key, &mut b, version);
        }

        #[test]
        fn fetch_responses_with_spliced_records_are_byte_for_byte_the_codecs(
            version in 4i16..=12,
            sizes in proptest::collection::vec(0usize..12_000, 0..6),
            seed in any::<u8>(),
        ) {
            use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
            use kafka_protocol::messages::{FetchResponse, TopicName};
            let partitions: Vec<PartitionData> = sizes
                .iter()
                .enumerate()
                .map(|(i, &n)| {
                    let data: Vec<u8> = (0..n).map(|j| (j as u8).wrapping_mul(seed).wrapping_add(i as u8)).collect();
                    PartitionData::default()
                        .with_partition_index(i as i32)
                        .with_high_watermark(n as i64)
                        .with_last_stable_offset(n as i64)
                        .with_records(Some(Bytes::from(data)))
                })
                .collect();
            let resp = FetchResponse::default().with_responses(vec![
                FetchableTopicResponse::default()
                    .with_topic(TopicName(str_bytes("t")))
                    .with_partitions(partitions),
            ]);
            let whole = encode_frame(ApiKey::Fetch, version, 7, &ResponseKind::Fetch(resp.clone())).unwrap();
            let labels = RequestLabels { request: "Fetch".into() };
            let Outcome::Respond { body, .. } = encode_fetch_response(labels, version, 7, resp) else {
                panic!("not a response");
            };
            let spliced: Vec<u8> = body.iter().flat_map(|c| c.iter().copied()).collect();
            prop_assert_eq!(&spliced[..], &whole[..]);
            let big = sizes.iter().filter(|&&n| n > FETCH_INLINE_MAX).count();
            prop_assert!(body.len() > 3 * big, "large record data travels as its own chunks");
        }
    }
}
