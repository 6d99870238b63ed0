//! Fetch (key 1): read whole record batches from each requested partition, long-polling until `min_bytes`
//! are available or `max_wait_ms` passes. Waiting parks on a [`Notify`] that appends wake; it never spins.
//!
//! Incremental fetch sessions (KIP-227) are not offered: every response carries session id 0, which tells
//! clients to send full fetch requests, as Kafka allows.
//!
//! read_committed (isolation level 1) reads only up to the last stable offset and lists the aborted
//! transactions among the returned batches; the client drops their records. Both levels report the LSO.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::error::ResponseError as E;
use kafka_protocol::messages::fetch_response::{
    AbortedTransaction, EpochEndOffset, FetchableTopicResponse, PartitionData,
};
use kafka_protocol::messages::{FetchRequest, FetchResponse, ProducerId};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::Ctx;
use crate::metrics::Metrics;
use crate::partition::ReplicaRead;

/// Upper bound on how long any fetch parks, whatever the client asks.
const MAX_WAIT_CAP: Duration = Duration::from_secs(60);

pub async fn handle(ctx: &Ctx<'_>, req: FetchRequest) -> FetchResponse {
    if req.session_id != 0 || req.session_epoch > 0 {
        return FetchResponse::default().with_error_code(E::FetchSessionIdNotFound.code());
    }
    let wait = Duration::from_millis(req.max_wait_ms.max(0) as u64).min(MAX_WAIT_CAP);
    let started = Instant::now();
    let deadline = started + wait;
    let notify = Arc::new(Notify::new());
    let mut seen = Vec::new();
    // Time parked on `notify`: the long poll, reported apart from the time spent reading.
    let mut parked = Duration::ZERO;
    loop {
        let may_wait = Instant::now() < deadline;
        // Segment reads are file I/O (page-cache copies, or the disk): off the async workers.
        let (resp, bytes, stop) =
            crate::blocking(|| read_once(ctx, &req, may_wait.then_some(&notify), &mut seen));
        if !may_wait || stop || bytes >= req.min_bytes.max(0) as usize {
            if req.replica_id.0 < 0 {
                account(ctx, &resp);
            }
            let m = &ctx.state.metrics;
            m.fetch_wait.observe(parked.as_secs_f64());
            m.fetch_processing
                .observe(started.elapsed().saturating_sub(parked).as_secs_f64());
            return resp;
        }
        // Woken by an append to any partition of this fetch, or by the deadline; then read again.
        let park = Instant::now();
        let _ = tokio::time::timeout_at(deadline, notify.notified()).await;
        parked += park.elapsed();
    }
}

/// The broker-wide cap on one fetch response (`fetch.max.bytes`, Kafka's default 55 MiB), whatever the
/// client asks for.
fn max_response_bytes(ctx: &Ctx<'_>, requested: i32) -> usize {
    let cap = ctx
        .state
        .config
        .props
        .get("fetch.max.bytes")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(57_671_680);
    (requested.max(0) as usize).min(cap)
}

fn account(ctx: &Ctx<'_>, resp: &FetchResponse) {
    for t in &resp.responses {
        let (mut bytes, mut records) = (0u64, 0u64);
        for p in &t.partitions {
            if let Some(r) = &p.records {
                bytes += r.len() as u64;
                records += record_count(r);
            }
        }
        if bytes > 0 {
            let labels = Metrics::topic(&t.topic.0);
            ctx.state
                .metrics
                .bytes_out
                .get_or_create(&labels)
                .inc_by(bytes);
            ctx.state
                .metrics
                .messages_out
                .get_or_create(&labels)
                .inc_by(records);
        }
    }
}

/// Sum of the recordCount fields of the batches in `data`, from their headers.
fn record_count(data: &[u8]) -> u64 {
    fjord_log::batch_headers(data)
        .map(|b| b.record_count.max(0) as u64)
        .sum()
}

/// What one pass read from a partition, kept while the fetch is parked: the partition's change count at the
/// read, and the result. A partition whose count has not moved is not read again (and its wake-up registration,
/// which only an append consumes, is still in place).
type Seen = Option<(u64, PartitionData)>;

/// One pass over the requested partitions. Returns the response, the record bytes in it, and whether an error
/// means the client should hear back at once rather than wait.
fn read_once(
    ctx: &Ctx<'_>,
    req: &FetchRequest,
    register: Option<&Arc<Notify>>,
    seen: &mut Vec<Seen>,
) -> (FetchResponse, usize, bool) {
    let broker = ctx.state;
    let mut remaining = max_response_bytes(ctx, req.max_bytes);
    let mut slot = 0usize;
    let mut total = 0usize;
    let mut stop = false;
    let read_committed = req.isolation_level == 1;
    // Kafka's replica id: a broker id for a follower's fetch, -1 for a consumer.
    let replica = req.replica_id.0;
    // For the leader-side replication throttle.
    let meta = (replica >= 0).then(|| broker.meta.state());
    let mut topics = Vec::with_capacity(req.topics.len());
    for t in &req.topics {
        let name: &str = &t.topic.0;
        let mut parts = Vec::with_capacity(t.partitions.len());
        for p in &t.partitions {
            if seen.len() <= slot {
                seen.push(None);
            }
            let cached = &mut seen[slot];
            slot += 1;
            let looked_up = broker.partitions.online(name, p.partition);
            if let (Some((count, pd)), Ok(Some(part))) = (cached.as_ref(), &looked_up) {
                if part.change_count() == *count {
                    let n = pd.records.as_ref().map_or(0, |r| r.len());
                    total += n;
                    remaining = remaining.saturating_sub(n);
                    parts.push(pd.clone());
                    continue;
                }
            }
            let mut pd = PartitionData::default()
                .with_partition_index(p.partition)
                .with_high_watermark(-1)
                .with_last_stable_offset(-1)
                .with_log_start_offset(-1)
                .with_preferred_read_replica(kafka_protocol::messages::BrokerId(-1))
                .with_aborted_transactions(read_committed.then(Vec::new))
                .with_records(Some(Bytes::new()));
            let part = match looked_up {
                Ok(Some(part)) => part,
                Ok(None) => {
                    // In the metadata but not hosted here (moved by a reassignment): the client looks for the leader.
                    let known = broker.meta.state().topics.get(name).is_some_and(|t| {
                        p.partition >= 0 && (p.partition as usize) < t.partitions.len()
                    });
                    pd.error_code = if known {
                        E::NotLeaderOrFollower.code()
                    } else {
                        E::UnknownTopicOrPartition.code()
                    };
                    stop = true;
                    parts.push(pd);
                    continue;
                }
                Err(e) => {
                    // Offline log directory: nothing is read from it, not even the offsets.
                    pd.error_code = e.code();
                    stop = true;
                    parts.push(pd);
                    continue;
                }
            };
            // Registered before reading, so an append between the read and the wait is never missed.
            let count = part.change_count();
            if let Some(n) = register {
                part.register_waiter(n);
            }
            let limit = (p.partition_max_bytes.max(0) as usize).min(remaining);
            // KIP-74: the first batch of the response is returned even when it exceeds the limits, so a large
            // batch can never block a consumer.
            let min_one = total == 0;
            if replica >= 0 {
                // A follower replicating: reads up to the log end, reports its position to the leader. An
                // out-of-sync follower of a throttled replica gets at most the leader's budget (one batch beyond
                // it, KIP-74), and no data while it is spent.
                let budget = meta
                    .as_ref()
                    .and_then(|m| broker.replication.leader_budget(broker, m, &part, replica));
                let limit = budget.map_or(limit, |b| limit.min(b));
                match part.read_for_follower(
                    replica,
                    p.current_leader_epoch,
                    p.fetch_offset,
                    p.last_fetched_epoch,
                    limit,
                ) {
                    Ok(ReplicaRead::Records {
                        mut records,
                        log_start_offset,
                        high_watermark,
                    }) => {
                        match budget {
                            Some(0) => records = bytes::Bytes::new(),
                            Some(_) => broker.replication.leader_charge(records.len()),
                            None => {}
                        }
                        pd.high_watermark = high_watermark;
                        pd.last_stable_offset = high_watermark;
                        pd.log_start_offset = log_start_offset;
                        total += records.len();
                        remaining = remaining.saturating_sub(records.len());
                        pd.records = Some(records);
                        *cached = Some((count, pd.clone()));
                    }
                    Ok(ReplicaRead::Diverging { epoch, end_offset }) => {
                        pd.high_watermark = part.high_watermark();
                        pd.diverging_epoch = EpochEndOffset::default()
                            .with_epoch(epoch)
                            .with_end_offset(end_offset);
                        stop = true;
                    }
                    Err(e) => {
                        let (start, hw) = part.offsets();
                        pd.high_watermark = hw;
                        pd.log_start_offset = start;
                        pd.error_code = e.code();
                        stop = true;
                    }
                }
                parts.push(pd);
                continue;
            }
            if let Err(e) = part.check_leader(p.current_leader_epoch) {
                pd.error_code = e.code();
                stop = true;
                parts.push(pd);
                continue;
            }
            match part.fetch(p.fetch_offset, limit, min_one, read_committed) {
                Ok(r) => {
                    pd.high_watermark = r.high_watermark;
                    pd.last_stable_offset = r.last_stable_offset;
                    pd.log_start_offset = r.log_start_offset;
                    if read_committed {
                        pd.aborted_transactions = Some(
                            r.aborted
                                .iter()
                                .map(|a| {
                                    AbortedTransaction::default()
                                        .with_producer_id(ProducerId(a.producer_id))
                                        .with_first_offset(a.first_offset)
                                })
                                .collect(),
                        );
                    }
                    total += r.records.len();
                    remaining = remaining.saturating_sub(r.records.len());
                    pd.records = Some(r.records);
                    *cached = Some((count, pd.clone()));
                }
                Err(e) => {
                    let (start, hw) = part.offsets();
                    pd.high_watermark = hw;
                    pd.last_stable_offset = part.last_stable_offset();
                    pd.log_start_offset = start;
                    pd.error_code = e.code();
                    stop = true;
                }
            }
            parts.push(pd);
        }
        topics.push(
            FetchableTopicResponse::default()
                .with_topic(t.topic.clone())
                .with_topic_id(t.topic_id)
                .with_partitions(parts),
        );
    }
    (FetchResponse::default().with_responses(topics), total, stop)
}
