//! Produce (key 0): validate and append each partition's record batches, then answer according to `acks`:
//! 0 sends no response, 1 answers after the write, -1 (all) answers after the data is fsynced (group commit,
//! see [`crate::partition::Partition::wait_durable`]). Batches stay raw bytes; no record is decoded.
//!
//! Handling is split in two so that a connection can pipeline acks=all produces: [`prepare`] appends
//! synchronously, in request order, and [`Prepared::complete`] only waits for durability, owning everything it
//! needs, so the server can start the next request meanwhile and several requests share one fsync.

use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::error::ResponseError as E;
use kafka_protocol::messages::produce_response::{
    BatchIndexAndErrorMessage, PartitionProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};

use super::{str_bytes, Ctx};
use crate::admin::is_internal_topic;
use crate::metrics::Metrics;
use crate::partition::{Origin, Partition};

fn error(index: i32, code: E, message: String) -> PartitionProduceResponse {
    PartitionProduceResponse::default()
        .with_index(index)
        .with_error_code(code.code())
        .with_error_message(Some(str_bytes(&message)))
        .with_base_offset(-1)
        .with_log_append_time_ms(-1)
        .with_log_start_offset(-1)
}

/// The appends are done; what is left is waiting for durability (acks=all) and answering.
pub struct Prepared {
    acks: i16,
    timeout: Duration,
    responses: Vec<TopicProduceResponse>,
    /// (topic index, partition index, partition, offset that must be durable and replicated, the leader epoch it
    /// was written in, min.insync.replicas)
    waits: Vec<(usize, usize, Arc<Partition>, i64, i32, usize)>,
}

impl Prepared {
    /// True when answering needs no waiting.
    pub fn is_complete(&self) -> bool {
        self.waits.is_empty()
    }

    /// Waits for every acks=all partition to be durable (bounded by the request's timeout) and builds the
    /// response; `None` for acks=0, which Kafka never answers.
    pub async fn complete(self) -> Option<ProduceResponse> {
        let Prepared {
            acks,
            timeout,
            mut responses,
            waits,
        } = self;
        let deadline = tokio::time::Instant::now() + timeout;
        for (ti, pi, partition, offset, epoch, min_isr) in waits {
            // Durable here first (fsync), then on every in-sync replica (the high watermark); both bounded by the
            // request's timeout.
            let outcome = tokio::time::timeout_at(deadline, partition.wait_durable(offset)).await;
            let failure = match outcome {
                Ok(Ok(())) => None,
                Ok(Err(e)) => {
                    tracing::error!(topic = %partition.topic, partition = partition.index, error = %e, "fsync failed");
                    Some((e.code(), e.to_string()))
                }
                Err(_) => Some((
                    E::RequestTimedOut.code(),
                    "timed out waiting for fsync".to_string(),
                )),
            };
            let failure = match failure {
                Some(f) => Some(f),
                None => {
                    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                    match partition
                        .wait_replicated(offset, epoch, min_isr, left)
                        .await
                    {
                        Ok(()) => None,
                        Err(e) => Some((e.code(), e.to_string())),
                    }
                }
            };
            if let Some((code, msg)) = failure {
                let r = &mut responses[ti].partition_responses[pi];
                r.error_code = code;
                r.error_message = Some(str_bytes(&msg));
            }
        }
        if acks == 0 {
            return None;
        }
        Some(ProduceResponse::default().with_responses(responses))
    }
}

/// Validates and appends every partition's batches, in request order, without waiting for fsync. It awaits only
/// to verify a transaction's first batch with a coordinator on another broker (KIP-890).
pub async fn prepare(ctx: &Ctx<'_>, req: ProduceRequest) -> Prepared {
    let broker = ctx.state;
    let acks = req.acks;
    let meta = broker.meta.state();
    let mut responses = Vec::with_capacity(req.topic_data.len());
    let mut waits = Vec::new();
    for (ti, topic) in req.topic_data.into_iter().enumerate() {
        let name = topic.name.0.to_string();
        let labels = Metrics::topic(&name);
        let topic_meta = meta.topics.get(&name);
        let min_isr: usize = topic_meta
            .and_then(|t| t.configs.get("min.insync.replicas").cloned())
            .or_else(|| broker.config.props.get("min.insync.replicas").cloned())
            .and_then(|v| v.parse().ok())
            .unwrap_or(1);
        let mut parts = Vec::with_capacity(topic.partition_data.len());
        for pd in topic.partition_data {
            let idx = pd.index;
            if !matches!(acks, -1..=1) {
                parts.push(error(
                    idx,
                    E::InvalidRequiredAcks,
                    format!("acks={acks} is not one of -1, 0, 1"),
                ));
                continue;
            }
            if is_internal_topic(&name) || topic_meta.is_some_and(|t| t.internal) {
                // Only the broker's coordinators write internal topics, by name, before they exist too (Kafka's
                // ReplicaManager checks the name; its code and wording).
                parts.push(error(
                    idx,
                    E::InvalidTopicException,
                    format!("Cannot append to internal topic {name}: only the broker writes it; commit offsets with OffsetCommit or TxnOffsetCommit."),
                ));
                continue;
            }
            let partition = match broker.partitions.online(&name, idx) {
                Ok(Some(p)) => p,
                Ok(None) => {
                    // A partition of the metadata not hosted here (e.g. moved away by a reassignment): the client
                    // refreshes its metadata and goes to the leader, as Kafka answers.
                    if topic_meta.is_some_and(|t| idx >= 0 && (idx as usize) < t.partitions.len()) {
                        parts.push(error(
                            idx,
                            E::NotLeaderOrFollower,
                            format!(
                                "broker {} is not a replica of {name}-{idx}",
                                broker.config.node_id
                            ),
                        ));
                    } else {
                        parts.push(error(
                            idx,
                            E::UnknownTopicOrPartition,
                            format!("{name}-{idx} does not exist"),
                        ));
                    }
                    continue;
                }
                Err(e) => {
                    parts.push(error(idx, E::KafkaStorageError, e.to_string()));
                    continue;
                }
            };
            if let Err(e) = partition.check_leader(-1) {
                parts.push(error(idx, E::NotLeaderOrFollower, e.to_string()));
                continue;
            }
            if acks == -1 {
                let isr = partition.isr_len();
                if isr < min_isr {
                    parts.push(error(
                        idx,
                        E::NotEnoughReplicas,
                        format!("{name}-{idx} has {isr} in-sync replica(s) and min.insync.replicas is {min_isr}: the write was refused; it is accepted again once enough replicas have caught up"),
                    ));
                    continue;
                }
            }
            let Some(records) = pd.records else {
                parts.push(error(idx, E::CorruptMessage, "no record batches".into()));
                continue;
            };
            // Kafka's rule since Produce v3 (`ProduceRequest.validateRecords`; every version served here is v3 or
            // later): one batch per partition, so a request is never half appended and a transactional batch
            // cannot hide behind a plain one. Bytes that frame no batch at all are left to the log's validation.
            let batches: Vec<fjord_log::BatchInfo> = fjord_log::batch_headers(&records).collect();
            if batches.len() > 1 || records.is_empty() {
                parts.push(error(
                    idx,
                    E::InvalidRecord,
                    format!(
                        "Produce requests with version {} must contain exactly one record batch per partition; \
                         {name}-{idx} has {}. Send each batch in its own request.",
                        ctx.version,
                        batches.len()
                    ),
                ));
                continue;
            }
            let id = req.transactional_id.as_deref().map_or("", |t| &**t);
            // KIP-890 part 1: the first batch of a transaction here is checked with its coordinator (in process,
            // or on another broker) under a guard taken first, which a marker voids: a transaction that ends
            // between the check and the append refuses the batch (else it would open a transaction here that
            // no marker ends).
            let txn = batches.iter().find(|b| b.is_transactional);
            let remote = txn.is_some() && !broker.transactions.coordinates_here(broker, id);
            let mut guard = None;
            if let Some(b) = txn {
                guard = partition.start_txn_verification(b.producer_id, b.producer_epoch);
                let checked = if remote {
                    match guard {
                        Some(_) => crate::transactions::verify_remote(
                            broker,
                            id,
                            b.producer_id,
                            b.producer_epoch,
                            &name,
                            idx,
                        )
                        .await
                        .map_err(|(code, message)| {
                            error(idx, E::InvalidTxnState, message).with_error_code(code)
                        }),
                        None => Ok(()),
                    }
                } else {
                    broker
                        .transactions
                        .may_write(broker, id, b.producer_id, b.producer_epoch, &name, idx)
                        .map_err(|(code, message)| error(idx, code, message))
                };
                if let Err(refused) = checked {
                    if let Some(g) = guard {
                        partition.finish_txn_verification(b.producer_id, g);
                    }
                    parts.push(refused);
                    continue;
                }
            }
            let len = records.len() as u64;
            // The append is file I/O (a write into the page cache, which can block under write-back pressure),
            // and validating a compressed batch decompresses it: off the async workers.
            let appended = crate::blocking(|| {
                if txn.is_some() {
                    partition.append_verified(records, Origin::Client, guard)
                } else {
                    partition.append(records)
                }
            });
            // Tried: the guard is done with (an appended first batch opened the transaction here).
            if let (Some(b), Some(g)) = (txn, guard) {
                partition.finish_txn_verification(b.producer_id, g);
            }
            match appended {
                Ok(info) => {
                    if info.batches.is_empty() {
                        // A retry of a batch already in the log, answered with its original offsets.
                        broker
                            .metrics
                            .duplicate_batches
                            .get_or_create(&labels)
                            .inc();
                    } else {
                        broker.metrics.bytes_in.get_or_create(&labels).inc_by(len);
                        let n: u64 = info
                            .batches
                            .iter()
                            .map(|b| b.record_count.max(0) as u64)
                            .sum();
                        broker.metrics.messages_in.get_or_create(&labels).inc_by(n);
                    }
                    if acks == -1 {
                        waits.push((
                            ti,
                            parts.len(),
                            partition.clone(),
                            info.last_offset + 1,
                            info.leader_epoch,
                            min_isr,
                        ));
                    }
                    parts.push(
                        PartitionProduceResponse::default()
                            .with_index(idx)
                            .with_base_offset(info.base_offset)
                            .with_log_append_time_ms(info.log_append_time)
                            .with_log_start_offset(info.log_start_offset),
                    );
                }
                Err(e) => {
                    tracing::debug!(topic = %name, partition = idx, error = %e, "produce rejected");
                    // KIP-467 (Produce v8+): the records at fault, so clients fail those and not the others.
                    let record_errors = match &e {
                        crate::Error::Log(fjord_log::Error::RecordErrors { errors, .. }) => errors
                            .iter()
                            .map(|(i, m)| {
                                BatchIndexAndErrorMessage::default()
                                    .with_batch_index(*i)
                                    .with_batch_index_error_message(Some(str_bytes(m)))
                            })
                            .collect(),
                        _ => Vec::new(),
                    };
                    parts.push(
                        PartitionProduceResponse::default()
                            .with_index(idx)
                            .with_error_code(e.code())
                            .with_error_message(Some(str_bytes(&e.to_string())))
                            .with_record_errors(record_errors)
                            .with_base_offset(-1)
                            .with_log_append_time_ms(-1)
                            .with_log_start_offset(-1),
                    );
                }
            }
        }
        responses.push(
            TopicProduceResponse::default()
                .with_name(topic.name)
                .with_partition_responses(parts),
        );
    }
    Prepared {
        acks,
        timeout: Duration::from_millis(req.timeout_ms.max(0) as u64),
        responses,
        waits,
    }
}
