//! WriteTxnMarkers (key 27): a transaction coordinator on another broker asks this one, the leader of some of
//! the transaction's partitions, to write their commit or abort markers. Each marker is answered once it is on
//! every in-sync replica (Kafka writes markers with acks=all); a marker for `__consumer_offsets` also completes
//! the transaction's pending offset commits in the group coordinator here. All markers are appended before any
//! wait, so the waits overlap.

use kafka_protocol::error::ResponseError as E;
use kafka_protocol::messages::write_txn_markers_response::{
    WritableTxnMarkerPartitionResult, WritableTxnMarkerResult, WritableTxnMarkerTopicResult,
};
use kafka_protocol::messages::{WriteTxnMarkersRequest, WriteTxnMarkersResponse};

use super::Ctx;
use crate::groups::{wait_acknowledged_by, OFFSETS_TOPIC, WRITE_TIMEOUT};

pub async fn handle(ctx: &Ctx<'_>, req: WriteTxnMarkersRequest) -> WriteTxnMarkersResponse {
    let state = ctx.state;
    // Every marker is appended first, then the waits run: their fsyncs and replication overlap, so a request
    // for many partitions takes about as long as its slowest one, not the sum (each wait is bounded).
    let mut written = Vec::new();
    let mut markers = Vec::with_capacity(req.markers.len());
    for (mi, m) in req.markers.iter().enumerate() {
        let kind = if m.transaction_result {
            fjord_log::ControlType::Commit
        } else {
            fjord_log::ControlType::Abort
        };
        let mut topics = Vec::with_capacity(m.topics.len());
        for (ti, t) in m.topics.iter().enumerate() {
            let mut partitions = Vec::with_capacity(t.partition_indexes.len());
            for &p in &t.partition_indexes {
                let code = match state.partitions.online(&t.name, p) {
                    Ok(None) => E::UnknownTopicOrPartition.code(),
                    Err(e) => e.code(),
                    Ok(Some(part)) => {
                        let appended = crate::blocking(|| {
                            part.append_marker(
                                m.producer_id.0,
                                m.producer_epoch,
                                kind,
                                m.coordinator_epoch,
                            )
                        });
                        match appended {
                            Err(e) => e.code(),
                            Ok((offset, epoch)) => {
                                written.push((mi, ti, partitions.len(), part, offset, epoch));
                                0
                            }
                        }
                    }
                };
                partitions.push(
                    WritableTxnMarkerPartitionResult::default()
                        .with_partition_index(p)
                        .with_error_code(code),
                );
            }
            topics.push(
                WritableTxnMarkerTopicResult::default()
                    .with_name(t.name.clone())
                    .with_partitions(partitions),
            );
        }
        markers.push(
            WritableTxnMarkerResult::default()
                .with_producer_id(m.producer_id)
                .with_topics(topics),
        );
    }
    // One deadline for every wait: a request for many partitions is answered within one WRITE_TIMEOUT.
    let deadline = tokio::time::Instant::now() + WRITE_TIMEOUT;
    for (mi, ti, pi, part, offset, epoch) in written {
        let m = &req.markers[mi];
        let code = match wait_acknowledged_by(state, &part, offset + 1, epoch, deadline).await {
            Err(e) => e.code(),
            Ok(()) => {
                if part.topic == OFFSETS_TOPIC {
                    state
                        .groups
                        .complete_txn(m.producer_id.0, part.index, m.transaction_result);
                }
                0
            }
        };
        markers[mi].topics[ti].partitions[pi].error_code = code;
    }
    for m in &markers {
        for t in &m.topics {
            for p in t.partitions.iter().filter(|p| p.error_code != 0) {
                tracing::warn!(topic = %t.name.0, partition = p.partition_index, producer_id = m.producer_id.0, code = p.error_code, "transaction marker not written");
            }
        }
    }
    WriteTxnMarkersResponse::default().with_markers(markers)
}
