//! One handler per Kafka API, and the table of versions each one serves.
//!
//! [`SUPPORTED`] is the single source of truth for ApiVersions and for version checks: a request for an API
//! that is not in the table, or at a version outside its range, never reaches a handler. Ranges start at the
//! lowest version the `kafka-protocol` codec decodes, which is also what Kafka 4.x itself serves (KIP-896
//! removed the older ones), and overlap every version librdkafka probes to enable message format v2 and zstd.

mod add_offsets_to_txn;
mod add_partitions_to_txn;
mod alter_configs;
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
mod describe_producers;
mod describe_transactions;
mod end_txn;
mod fetch;
mod find_coordinator;
mod heartbeat;
mod init_producer_id;
mod join_group;
mod leave_group;
mod list_groups;
mod list_offsets;
mod list_transactions;
mod metadata;
mod offset_commit;
mod offset_delete;
mod offset_fetch;
mod produce;
mod sync_group;
mod txn_offset_commit;

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
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::AlterConfigs, 0, 2),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::DescribeCluster, 0, 1),
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
    /// Write this complete frame (length prefix included).
    Respond { api: RequestLabels, body: Bytes },
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
            return Err(encode_response(
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
            let prepared = produce::prepare(&ctx, r);
            let finish = move |resp: Option<_>| match resp {
                Some(resp) => encode_response(
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
        RequestKind::Fetch(r) => ResponseKind::Fetch(fetch::handle(&ctx, r).await),
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
        _ => return Err(Outcome::Close(format!("no handler for {key:?}"))),
    };
    Ok(Handled::Done(encode_response(
        labels,
        key,
        version,
        correlation_id,
        response,
    )))
}

fn encode_response(
    api: RequestLabels,
    key: ApiKey,
    version: i16,
    correlation_id: i32,
    response: ResponseKind,
) -> Outcome {
    let mut buf = BytesMut::with_capacity(256);
    buf.put_i32(0); // length, patched below
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    // ApiVersions responses always use header v0 so that a client can parse them before it knows our versions.
    let header_version = key.response_header_version(version);
    if let Err(e) = header.encode(&mut buf, header_version) {
        return Outcome::Close(format!("encoding response header failed: {e}"));
    }
    if let Err(e) = response.encode(&mut buf, version) {
        return Outcome::Close(format!("encoding {key:?} v{version} response failed: {e}"));
    }
    let len = (buf.len() - 4) as i32;
    buf[0..4].copy_from_slice(&len.to_be_bytes());
    Outcome::Respond {
        api,
        body: buf.freeze(),
    }
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
    }
}
