//! Message search, `GET /api/topics/{name}/search`: a server-side scan of a bounded range of a topic for the
//! records whose key, value or headers contain a text. The answer is a stream of server-sent events, so the page
//! shows progress while the scan runs and stops it by closing the stream:
//!
//! - `progress`: `{scanned, bytes, total, partition, offset, removed}` at most every [`PROGRESS_EVERY`] (`total`
//!   is the number of offsets in the ranges searched, an upper bound of the records), and when retention removes
//!   offsets before the scan reaches them (the scan goes on from the new log start; `removed` lists
//!   `{partition, from, to}`);
//! - `match`: one record as the message browser shows it (base64 fields), with its `partition`; with
//!   `decode=registry`, its key and value decoded through the schema registry as the browser decodes them;
//! - `done`: `{reason, scanned, bytes, matches, next: {partition, offset} | null, skipped_partitions, removed}`, where
//!   `reason` is `end` (every range scanned), `limit` (enough matches; `next` is where to resume),
//!   `max_records` or `time_limit` (the scan's bounds; `next` is where it stopped);
//! - `error`: `{error}` when a partition cannot be read or a batch cannot be decoded.
//!
//! Records are walked as a consumer of the `isolation` asked for sees them (read_uncommitted, the default: up to
//! the high watermark, records of aborted transactions included and marked `aborted`; read_committed: up to the
//! last stable offset, without them; never control records; [`crate::walk`]). The text is looked for in the raw bytes: a record in a schema registry format (Avro, Protobuf) is not decoded
//! first, so a text inside an Avro string matches, a JSON field name of a Protobuf message does not.
//!
//! **Bounds**: a search reads at most `max_records` records (default [`DEFAULT_SCAN`], at most [`MAX_SCAN`]) for
//! at most [`TIME_LIMIT`], returns at most `limit` matches, and at most [`MAX_SEARCHES`] run at once (each also
//! holds one of the dashboard's read turns). A closed stream (the page's Stop button, a closed tab) ends the scan
//! at its next record: the scan runs on a blocking thread and stops as soon as an event cannot be delivered.
//! Bad parameters are a JSON 400 before any event, like every other API answer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{json, Value};

use crate::api::{bad, message_json, Ctx, Fail, Query, MAX_MESSAGES, MAX_RESPONSE_BYTES};
use crate::walk::{Chunk, Flow, ReadError, Step, Walk};

/// Searches running at once; one more is refused with 503.
pub const MAX_SEARCHES: usize = 2;
/// Most records one search reads, and what it reads when `max_records` is not given.
pub const MAX_SCAN: i64 = 10_000_000;
pub const DEFAULT_SCAN: i64 = 1_000_000;
/// Longest text searched for, in bytes.
pub const MAX_NEEDLE: usize = 1024;
/// Longest a search runs.
pub const TIME_LIMIT: Duration = Duration::from_secs(60);
/// Shortest time between two progress events.
pub const PROGRESS_EVERY: Duration = Duration::from_millis(250);
/// Log bytes read at a time (whole batches).
const READ_CHUNK: usize = 1 << 20;
/// Events waiting for a client that does not read; past `STALL_LIMIT` of a full queue the search ends.
const QUEUE: usize = 64;
const STALL_LIMIT: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Field {
    Any,
    Key,
    Value,
    Headers,
}

/// One partition's offsets to scan, `[from, to)`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Range {
    pub partition: i32,
    pub from: i64,
    pub to: i64,
}

/// What to look for and where, checked and resolved to offsets.
#[derive(Debug)]
pub(crate) struct Plan {
    pub ranges: Vec<Range>,
    /// Partitions this broker does not host (searched on their leader's dashboard).
    pub skipped: Vec<i32>,
    /// Lower-cased (ASCII) when `ignore_case`.
    pub needle: Vec<u8>,
    pub ignore_case: bool,
    pub field: Field,
    pub from_time: Option<i64>,
    pub to_time: Option<i64>,
    pub limit: usize,
    pub max_records: u64,
    /// `decode=registry`: each match also carries `key_decoded` / `value_decoded`, as the message browser's.
    pub decode: bool,
    /// What the scan reads: up to the high watermark with aborted records (marked), or read_committed's view.
    pub isolation: crate::walk::Isolation,
}

/// An event of the stream, before framing.
#[derive(Debug, PartialEq)]
pub(crate) enum Event {
    Progress(Value),
    Match(Value),
    Done(Value),
    Error(Value),
}

impl Event {
    fn frame(&self) -> Bytes {
        let (name, data) = match self {
            Event::Progress(v) => ("progress", v),
            Event::Match(v) => ("match", v),
            Event::Done(v) => ("done", v),
            Event::Error(v) => ("error", v),
        };
        // serde_json never writes a raw newline, so one `data:` line holds the whole value.
        Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
    }
}

/// The search's parameters, checked; offsets resolved against the partitions hosted here.
fn plan(
    ctx: &Ctx,
    topic: &str,
    q: &Query,
) -> Result<(Plan, Vec<Arc<fjord_broker::partition::Partition>>), Fail> {
    let t = ctx
        .state
        .meta
        .state()
        .topics
        .get(topic)
        .cloned()
        .ok_or_else(|| crate::api::not_found(format!("topic `{topic}` does not exist")))?;
    let text = q
        .str("q")
        .ok_or_else(|| bad("`q` is required: the text to look for"))?;
    if text.len() > MAX_NEEDLE {
        return Err(bad(format!(
            "`q` is {} bytes; search for at most {MAX_NEEDLE}",
            text.len()
        )));
    }
    let ignore_case = q.flag("ignore_case")?;
    let needle = if ignore_case {
        text.as_bytes().to_ascii_lowercase()
    } else {
        text.as_bytes().to_vec()
    };
    let field = match q.str("in").unwrap_or("any") {
        "any" => Field::Any,
        "key" => Field::Key,
        "value" => Field::Value,
        "headers" => Field::Headers,
        other => {
            return Err(bad(format!(
                "`in` must be any, key, value or headers, not `{other}`"
            )))
        }
    };
    let n = t.partitions.len() as i64;
    if n == 0 {
        return Err(bad(format!("topic `{}` has no partitions", t.name)));
    }
    let only = q.int("partition", 0, n - 1)?;
    let from_offset = q.int("from_offset", 0, i64::MAX)?;
    let to_offset = q.int("to_offset", 0, i64::MAX)?;
    let from_time = q.int("from_time", 0, i64::MAX)?;
    let to_time = q.int("to_time", 0, i64::MAX - 1)?;
    if let (Some(a), Some(b)) = (from_offset, to_offset) {
        if a > b {
            return Err(bad(format!(
                "`from_offset` ({a}) is after `to_offset` ({b})"
            )));
        }
    }
    if let (Some(a), Some(b)) = (from_time, to_time) {
        if a > b {
            return Err(bad(format!("`from_time` ({a}) is after `to_time` ({b})")));
        }
    }
    let limit = q
        .int("limit", 1, MAX_MESSAGES as i64)?
        .unwrap_or(crate::api::DEFAULT_MESSAGES as i64) as usize;
    let decode = match q.str("decode").unwrap_or("none") {
        "none" => false,
        "registry" => true,
        other => {
            return Err(bad(format!(
                "`decode` must be none or registry (Avro, JSON Schema and Protobuf through the schema registry), not `{other}`"
            )))
        }
    };
    let max_records = q.int("max_records", 1, MAX_SCAN)?.unwrap_or(DEFAULT_SCAN) as u64;
    let isolation = crate::walk::Isolation::from_query(q)?;
    let partitions: Vec<i32> = match only {
        Some(p) => vec![p as i32],
        None => (0..n as i32).collect(),
    };
    let mut ranges = Vec::new();
    let mut logs = Vec::new();
    let mut skipped = Vec::new();
    for partition in partitions {
        let Some(p) = ctx.state.partitions.get(&t.name, partition) else {
            if only.is_some() {
                return Err(Fail {
                    status: StatusCode::SERVICE_UNAVAILABLE,
                    message: format!(
                        "partition {partition} of `{}` is not hosted on this broker (node {}); search it on the dashboard of its leader, broker {}",
                        t.name, ctx.state.config.node_id, t.partitions[partition as usize].leader
                    ),
                    code: None,
                    not_running: None,
                });
            }
            skipped.push(partition);
            continue;
        };
        let start = p.offsets().0;
        let end = isolation.end(&p);
        let mut from = from_offset.unwrap_or(start).max(start);
        let mut to = to_offset.unwrap_or(end).min(end);
        let unreadable = |e: fjord_broker::Error| Fail {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: format!("cannot read partition {partition} of `{}`: {e}", t.name),
            code: None,
            not_running: None,
        };
        if let Some(ts) = from_time {
            // The first record stamped at or after `from_time`; none: nothing to scan here.
            from = from.max(
                p.offset_for_timestamp(ts)
                    .map_err(unreadable)?
                    .map_or(end, |(o, _)| o),
            );
        }
        if let Some(ts) = to_time {
            // Up to the first record stamped after `to_time` (later records stamped earlier are not looked for).
            if let Some((o, _)) = p.offset_for_timestamp(ts + 1).map_err(unreadable)? {
                to = to.min(o);
            }
        }
        ranges.push(Range {
            partition,
            from,
            to: to.max(from),
        });
        logs.push(p);
    }
    Ok((
        Plan {
            ranges,
            skipped,
            needle,
            ignore_case,
            field,
            from_time,
            to_time,
            limit,
            max_records,
            decode,
            isolation,
        },
        logs,
    ))
}

/// `GET /api/topics/{name}/search`: a JSON refusal, or the event stream of a search started on a blocking
/// thread.
pub(crate) async fn start(ctx: &Ctx, topic: &str, q: &Query) -> Response {
    let Ok(running) = ctx.searches.clone().try_acquire_owned() else {
        return Fail {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: format!(
                "{MAX_SEARCHES} searches are running on this dashboard; stop one (its Stop button, or close its page) or wait for it to end"
            ),
            code: None,
            not_running: None,
        }
        .into_response();
    };
    let turn = match crate::api::read_turn(&ctx.reads, crate::api::READ_WAIT).await {
        Ok(t) => t,
        Err(f) => return f.into_response(),
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(QUEUE);
    let (planned_tx, planned_rx) = tokio::sync::oneshot::channel::<Result<(), Fail>>();
    let (ctx, topic, q) = (ctx.clone(), topic.to_string(), q.clone());
    // Planning reads the logs too (time bounds are index lookups), so it runs on the blocking thread, under
    // the search's permits, like the scan.
    tokio::task::spawn_blocking(move || {
        let _held = (running, turn);
        let deadline = Instant::now() + TIME_LIMIT;
        let (plan, logs) = match plan(&ctx, &topic, &q) {
            Ok(p) => {
                let _ = planned_tx.send(Ok(()));
                p
            }
            Err(f) => {
                let _ = planned_tx.send(Err(f));
                return;
            }
        };
        let mut readers: Vec<_> = logs
            .iter()
            .map(|p| crate::walk::partition_reader(p, true, plan.isolation))
            .collect();
        let mut read =
            |i: usize, offset: i64, max: usize, first: bool| readers[i](offset, max, first);
        let mut emit = |ev: Event| deliver(&tx, ev.frame(), deadline);
        // Matches decoded as the message browser decodes them (the text was looked for in the raw bytes).
        let mut decoding = plan
            .decode
            .then(|| crate::decode::Decoding::new(&ctx.services, &ctx.schemas))
            .flatten();
        let mut decorate =
            |r: &kafka_protocol::records::Record, m: &mut Value, budget: &mut usize| {
                if let Some(d) = decoding.as_mut() {
                    for (name, f) in [("key_decoded", &r.key), ("value_decoded", &r.value)] {
                        if let Some(b) = f {
                            m[name] = d.field(b, budget);
                        }
                    }
                }
            };
        scan_with(&plan, &mut read, deadline, &mut emit, &mut decorate);
    });
    match planned_rx.await {
        Ok(Ok(())) => {}
        Ok(Err(f)) => return f.into_response(),
        Err(_) => {
            return Fail {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                message: "the search stopped before it started".into(),
                code: None,
                not_running: None,
            }
            .into_response()
        }
    }
    let r = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/event-stream")
        .body(Body::from_stream(crate::live::queued(rx)))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response());
    crate::live::unbuffered(r)
}

/// Hands one framed event to the response; false when the client is gone, or has not read for
/// [`STALL_LIMIT`], or the search's deadline has passed while it waited: either ends the scan.
fn deliver(tx: &tokio::sync::mpsc::Sender<Bytes>, mut frame: Bytes, deadline: Instant) -> bool {
    let give_up = (Instant::now() + STALL_LIMIT).min(deadline);
    loop {
        match tx.try_send(frame) {
            Ok(()) => return true,
            Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => return false,
            Err(tokio::sync::mpsc::error::TrySendError::Full(f)) => {
                if Instant::now() >= give_up {
                    return false;
                }
                frame = f;
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

/// Whether `hay` contains `needle` (already lower-cased when `ignore_case`; ASCII case folding only).
pub(crate) fn contains(hay: &[u8], needle: &[u8], ignore_case: bool) -> bool {
    if needle.is_empty() {
        return true;
    }
    if needle.len() > hay.len() {
        return false;
    }
    let first = needle[0];
    let last_start = hay.len() - needle.len();
    let mut i = 0;
    while i <= last_start {
        // Skip to the next position whose first byte can start a match.
        let pos = hay[i..=last_start].iter().position(|&b| {
            if ignore_case {
                b.to_ascii_lowercase() == first
            } else {
                b == first
            }
        });
        let Some(p) = pos else { return false };
        let at = i + p;
        let w = &hay[at..at + needle.len()];
        if if ignore_case {
            w.eq_ignore_ascii_case(needle)
        } else {
            w == needle
        } {
            return true;
        }
        i = at + 1;
    }
    false
}

fn matches(plan: &Plan, r: &kafka_protocol::records::Record) -> bool {
    let m = |b: Option<&[u8]>| b.is_some_and(|b| contains(b, &plan.needle, plan.ignore_case));
    let key = || m(r.key.as_deref());
    let value = || m(r.value.as_deref());
    let headers = || {
        r.headers
            .iter()
            .any(|(k, v)| m(Some(k.as_bytes())) || m(v.as_deref()))
    };
    match plan.field {
        Field::Any => key() || value() || headers(),
        Field::Key => key(),
        Field::Value => value(),
        Field::Headers => headers(),
    }
}

/// Why the visitor stopped the walk.
enum Why {
    Gone,
    Limit,
    MaxRecords,
    TimeLimit,
}

/// Scans `plan`'s ranges in partition order, reading with `read(range index, offset, max bytes, first read)` and
/// delivering events with `emit` (false: stop at once, the client is gone). Ends with one `done` or `error`
/// event unless stopped. Records are walked as a consumer of `plan.isolation` sees them ([`crate::walk`]); offsets
/// retention removed before the scan reached them are listed in `removed` (progress and done events).
#[cfg(test)]
pub(crate) fn scan(
    plan: &Plan,
    read: &mut dyn FnMut(usize, i64, usize, bool) -> Result<Chunk, ReadError>,
    deadline: Instant,
    emit: &mut dyn FnMut(Event) -> bool,
) {
    scan_with(plan, read, deadline, emit, &mut |_, _, _| {});
}

/// [`scan`], with `decorate` adding to each match (from its record, within the match's byte budget) before it
/// is sent.
pub(crate) fn scan_with(
    plan: &Plan,
    read: &mut dyn FnMut(usize, i64, usize, bool) -> Result<Chunk, ReadError>,
    deadline: Instant,
    emit: &mut dyn FnMut(Event) -> bool,
    decorate: &mut dyn FnMut(&kafka_protocol::records::Record, &mut Value, &mut usize),
) {
    let total: i64 = plan.ranges.iter().map(|r| r.to - r.from).sum();
    let (mut scanned, mut bytes_read, mut found) = (0u64, 0u64, 0usize);
    let mut removed: Vec<Value> = Vec::new();
    let mut last_progress = Instant::now();
    let done = |reason: &str,
                next: Option<(i32, i64)>,
                scanned: u64,
                bytes: u64,
                found: usize,
                removed: &[Value]| {
        Event::Done(json!({
            "reason": reason, "scanned": scanned, "bytes": bytes, "matches": found, "total": total,
            "next": next.map(|(p, o)| json!({"partition": p, "offset": o})),
            "skipped_partitions": plan.skipped, "removed": removed,
            "isolation": plan.isolation.name(),
        }))
    };
    if !emit(Event::Progress(json!({
        "scanned": 0, "bytes": 0, "total": total,
        "partition": plan.ranges.first().map(|r| r.partition), "offset": plan.ranges.first().map(|r| r.from),
        "removed": [],
    }))) {
        return;
    }
    for (i, range) in plan.ranges.iter().enumerate() {
        let mut walk = Walk::new(range.from, range.to, plan.isolation);
        let mut read_range = |o: i64, m: usize, first: bool| read(i, o, m, first);
        while walk.next < range.to {
            let bound = if scanned >= plan.max_records {
                Some("max_records")
            } else if Instant::now() >= deadline {
                Some("time_limit")
            } else {
                None
            };
            if let Some(reason) = bound {
                emit(done(
                    reason,
                    Some((range.partition, walk.next)),
                    scanned,
                    bytes_read,
                    found,
                    &removed,
                ));
                return;
            }
            let mut why = None;
            let before = (walk.bytes_read, walk.removed);
            let step = walk.step(&mut read_range, READ_CHUNK, &mut |r, aborted| {
                scanned += 1;
                let in_time = plan.from_time.is_none_or(|t| r.timestamp >= t)
                    && plan.to_time.is_none_or(|t| r.timestamp <= t);
                if in_time && matches(plan, r) {
                    let mut budget = MAX_RESPONSE_BYTES / MAX_MESSAGES;
                    let mut m = message_json(r, aborted, &mut budget);
                    decorate(r, &mut m, &mut budget);
                    m["partition"] = json!(range.partition);
                    if !emit(Event::Match(m)) {
                        why = Some(Why::Gone);
                        return Flow::Before;
                    }
                    found += 1;
                    if found >= plan.limit {
                        why = Some(Why::Limit);
                        return Flow::After;
                    }
                }
                if scanned >= plan.max_records {
                    why = Some(Why::MaxRecords);
                    return Flow::After;
                }
                if last_progress.elapsed() >= PROGRESS_EVERY {
                    if Instant::now() >= deadline {
                        why = Some(Why::TimeLimit);
                        return Flow::After;
                    }
                    if !emit(Event::Progress(json!({
                        "scanned": scanned, "bytes": bytes_read, "total": total,
                        "partition": range.partition, "offset": r.offset + 1, "removed": removed,
                    }))) {
                        why = Some(Why::Gone);
                        return Flow::Before;
                    }
                    last_progress = Instant::now();
                }
                Flow::Next
            });
            bytes_read += walk.bytes_read - before.0;
            if walk.removed != before.1 {
                if let Some((from, to)) = walk.removed {
                    // Retention removed offsets before the scan reached them: said once per partition, updated.
                    removed.retain(|v| v["partition"] != range.partition);
                    removed.push(json!({"partition": range.partition, "from": from, "to": to}));
                    if !emit(Event::Progress(json!({
                        "scanned": scanned, "bytes": bytes_read, "total": total,
                        "partition": range.partition, "offset": walk.next, "removed": removed,
                    }))) {
                        return;
                    }
                }
            }
            match step {
                Step::Read => {}
                Step::Reached => break,
                Step::Failed(e) => {
                    emit(Event::Error(json!({
                        "error": format!("partition {}: {e}", range.partition),
                    })));
                    return;
                }
                Step::Stopped => match why {
                    None | Some(Why::Gone) => return,
                    // Checked at the top of the loop.
                    Some(Why::MaxRecords) => {}
                    Some(Why::Limit) => {
                        let resume = (walk.next < range.to)
                            .then_some((range.partition, walk.next))
                            .or_else(|| plan.ranges.get(i + 1).map(|r| (r.partition, r.from)));
                        emit(done("limit", resume, scanned, bytes_read, found, &removed));
                        return;
                    }
                    Some(Why::TimeLimit) => {
                        emit(done(
                            "time_limit",
                            Some((range.partition, walk.next)),
                            scanned,
                            bytes_read,
                            found,
                            &removed,
                        ));
                        return;
                    }
                },
            }
        }
    }
    emit(done("end", None, scanned, bytes_read, found, &removed));
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::records::{
        Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };

    fn batch(base: i64, values: &[&str]) -> Bytes {
        let records: Vec<Record> = values
            .iter()
            .enumerate()
            .map(|(i, v)| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: 0,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: base + i as i64,
                sequence: -1,
                timestamp: 1000 + base + i as i64,
                key: Some(Bytes::from(format!("k{}", base + i as i64))),
                value: Some(Bytes::from(v.to_string())),
                headers: Default::default(),
            })
            .collect();
        let mut out = bytes::BytesMut::new();
        RecordBatchEncoder::encode(
            &mut out,
            &records,
            &RecordEncodeOptions {
                version: 2,
                compression: Compression::None,
            },
        )
        .unwrap();
        out.freeze()
    }

    /// One partition of `n` records in batches of 10: value "v{offset}", and "needle" in every 7th.
    fn log(n: i64) -> Vec<(i64, Bytes)> {
        (0..n)
            .step_by(10)
            .map(|base| {
                let values: Vec<String> = (base..(base + 10).min(n))
                    .map(|o| {
                        if o % 7 == 3 {
                            format!("a NeEdLe {o}")
                        } else {
                            format!("v{o}")
                        }
                    })
                    .collect();
                let refs: Vec<&str> = values.iter().map(String::as_str).collect();
                (base, batch(base, &refs))
            })
            .collect()
    }

    /// Reads whole batches from the one holding `offset`, as the partition does (one batch per read here).
    fn reader(
        batches: &[(i64, Bytes)],
    ) -> impl FnMut(usize, i64, usize, bool) -> Result<Chunk, ReadError> + '_ {
        move |_, offset, _, _| {
            Ok(Chunk {
                records: batches
                    .iter()
                    .rev()
                    .find(|(base, _)| *base <= offset)
                    .map(|(_, b)| b.clone())
                    .unwrap_or_default(),
                aborted: Vec::new(),
            })
        }
    }

    fn plan(needle: &str, ignore_case: bool, from: i64, to: i64, limit: usize, max: u64) -> Plan {
        Plan {
            ranges: vec![Range {
                partition: 0,
                from,
                to,
            }],
            skipped: vec![],
            needle: if ignore_case {
                needle.to_ascii_lowercase()
            } else {
                needle.to_string()
            }
            .into_bytes(),
            ignore_case,
            field: Field::Value,
            from_time: None,
            to_time: None,
            limit,
            max_records: max,
            decode: false,
            isolation: crate::walk::Isolation::ReadCommitted,
        }
    }

    fn run(plan: &Plan, batches: &[(i64, Bytes)], stop_after: usize) -> Vec<Event> {
        let mut events = Vec::new();
        let mut read = reader(batches);
        let far = Instant::now() + Duration::from_secs(60);
        scan(plan, &mut read, far, &mut |e| {
            events.push(e);
            events.len() < stop_after
        });
        events
    }

    fn match_offsets(events: &[Event]) -> Vec<i64> {
        events
            .iter()
            .filter_map(|e| match e {
                Event::Match(m) => m["offset"].as_i64(),
                _ => None,
            })
            .collect()
    }

    fn done(events: &[Event]) -> &Value {
        match events.last() {
            Some(Event::Done(v)) => v,
            other => panic!("the last event is not done: {other:?}"),
        }
    }

    #[test]
    fn finds_every_match_in_the_range_and_counts_what_it_scanned() {
        let batches = log(100);
        let events = run(
            &plan("needle", true, 5, 60, 100, 1000),
            &batches,
            usize::MAX,
        );
        let want: Vec<i64> = (5..60).filter(|o| o % 7 == 3).collect();
        assert_eq!(match_offsets(&events), want);
        let d = done(&events);
        assert_eq!(d["reason"], "end");
        assert_eq!(d["scanned"], 55);
        assert_eq!(d["matches"], want.len());
        // Case matters unless told otherwise.
        let events = run(
            &plan("needle", false, 0, 100, 100, 1000),
            &batches,
            usize::MAX,
        );
        assert_eq!(match_offsets(&events), Vec::<i64>::new());
        let events = run(
            &plan("NeEdLe 38", false, 0, 100, 100, 1000),
            &batches,
            usize::MAX,
        );
        assert_eq!(match_offsets(&events), vec![38]);
    }

    #[test]
    fn stops_at_the_limit_and_says_where_to_resume() {
        let batches = log(100);
        let events = run(&plan("needle", true, 0, 100, 3, 1000), &batches, usize::MAX);
        assert_eq!(match_offsets(&events), vec![3, 10, 17]);
        let d = done(&events);
        assert_eq!(d["reason"], "limit");
        assert_eq!(d["next"], json!({"partition": 0, "offset": 18}));
    }

    #[test]
    fn reads_no_more_than_max_records() {
        let batches = log(100);
        let events = run(&plan("needle", true, 0, 100, 100, 25), &batches, usize::MAX);
        assert_eq!(match_offsets(&events), vec![3, 10, 17, 24]);
        let d = done(&events);
        assert_eq!(d["reason"], "max_records");
        assert_eq!(d["scanned"], 25);
        assert_eq!(d["next"], json!({"partition": 0, "offset": 25}));
    }

    #[test]
    fn a_client_that_goes_away_stops_the_scan_at_once() {
        let batches = log(1000);
        let mut read_calls = 0;
        let mut inner = reader(&batches);
        let mut read = |i: usize, o: i64, m: usize, f: bool| {
            read_calls += 1;
            inner(i, o, m, f)
        };
        let mut events = 0;
        let far = Instant::now() + Duration::from_secs(60);
        // The first progress event and the first match are delivered; the second match is not: stop.
        scan(
            &plan("needle", true, 0, 1000, 100, 100_000),
            &mut read,
            far,
            &mut |_| {
                events += 1;
                events < 3
            },
        );
        assert_eq!(events, 3);
        assert_eq!(read_calls, 2, "the scan read on after its client was gone");
    }

    #[test]
    fn a_passed_deadline_ends_the_scan_with_time_limit() {
        let batches = log(100);
        let mut read = reader(&batches);
        let mut events = Vec::new();
        scan(
            &plan("needle", true, 0, 100, 100, 1000),
            &mut read,
            Instant::now(),
            &mut |e| {
                events.push(e);
                true
            },
        );
        assert_eq!(done(&events)["reason"], "time_limit");
        assert_eq!(done(&events)["scanned"], 0);
    }

    #[test]
    fn the_deadline_ends_the_scan_inside_a_large_batch() {
        // One batch of 1,000 records; the client takes 300 ms over the first match, past the 100 ms deadline.
        let values: Vec<String> = (0..1000)
            .map(|o| {
                if o == 3 {
                    "needle".into()
                } else {
                    format!("v{o}")
                }
            })
            .collect();
        let refs: Vec<&str> = values.iter().map(String::as_str).collect();
        let batches = vec![(0, batch(0, &refs))];
        let mut read = reader(&batches);
        let mut events = Vec::new();
        let deadline = Instant::now() + Duration::from_millis(100);
        scan(
            &plan("needle", false, 0, 1000, 100, 100_000),
            &mut read,
            deadline,
            &mut |e| {
                if matches!(e, Event::Match(_)) {
                    std::thread::sleep(Duration::from_millis(300));
                }
                events.push(e);
                true
            },
        );
        let d = done(&events);
        assert_eq!(d["reason"], "time_limit", "{d}");
        assert!(
            d["scanned"].as_u64().unwrap() < 1000,
            "read the whole batch past its deadline: {d}"
        );
    }

    /// `batch(base, values)` (the encoder may make several batches) as compaction leaves it after removing
    /// records up to `last`: the last batch's header still claims offsets through `last`, its checksum matching.
    fn compacted(base: i64, values: &[&str], last: i64) -> Bytes {
        let mut b = batch(base, values).to_vec();
        let (mut start, mut last_batch) = (0, None);
        for info in fjord_log::batch_headers(&b) {
            last_batch = Some((start, info.base_offset, info.size));
            start += info.size;
        }
        let (at, batch_base, size) = last_batch.expect("a batch");
        let header = &mut b[at..at + size];
        header[23..27].copy_from_slice(&((last - batch_base) as i32).to_be_bytes());
        let crc = crc32c::crc32c(&header[21..]);
        header[17..21].copy_from_slice(&crc.to_be_bytes());
        Bytes::from(b)
    }

    #[test]
    fn offsets_compaction_removed_at_a_batch_end_do_not_stop_the_scan() {
        // Offsets 0-2 kept of a batch that held 0-9, then a batch from 10: the scan reads on past 9.
        let batches = vec![
            (0, compacted(0, &["a needle", "b", "c"], 9)),
            (10, batch(10, &["d", "e needle"])),
        ];
        let events = run(
            &plan("needle", false, 0, 12, 100, 1000),
            &batches,
            usize::MAX,
        );
        assert_eq!(match_offsets(&events), vec![0, 11], "{events:?}");
        assert_eq!(done(&events)["reason"], "end");
    }

    /// `values` as one transactional batch of producer `pid` from offset `base`.
    fn txn_batch(base: i64, pid: i64, values: &[&str]) -> Bytes {
        let records: Vec<Record> = values
            .iter()
            .enumerate()
            .map(|(i, v)| Record {
                transactional: true,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: 0,
                producer_id: pid,
                producer_epoch: 0,
                timestamp_type: TimestampType::Creation,
                offset: base + i as i64,
                sequence: i as i32,
                timestamp: 1000,
                key: None,
                value: Some(Bytes::from(v.to_string())),
                headers: Default::default(),
            })
            .collect();
        let mut out = bytes::BytesMut::new();
        RecordBatchEncoder::encode(
            &mut out,
            &records,
            &RecordEncodeOptions {
                version: 2,
                compression: Compression::None,
            },
        )
        .unwrap();
        out.freeze()
    }

    /// A transaction marker of producer `pid` at `offset` (the base offset is outside the checksum).
    fn marker(offset: i64, pid: i64, kind: fjord_log::ControlType) -> Bytes {
        let mut b = fjord_log::control_batch(pid, 0, kind, 0, 1000).to_vec();
        b[..8].copy_from_slice(&offset.to_be_bytes());
        Bytes::from(b)
    }

    #[test]
    fn records_of_aborted_transactions_are_skipped_as_read_committed_skips_them() {
        let events = aborted_and_committed(crate::walk::Isolation::ReadCommitted);
        assert_eq!(match_offsets(&events), vec![3, 4], "{events:?}");
        let d = done(&events);
        assert_eq!(d["reason"], "end");
        assert_eq!(d["scanned"], 2, "{d}");
        assert_eq!(d["isolation"], "read_committed", "{d}");
    }

    #[test]
    fn read_uncommitted_finds_records_of_aborted_transactions_marked_but_never_markers() {
        let events = aborted_and_committed(crate::walk::Isolation::ReadUncommitted);
        assert_eq!(match_offsets(&events), vec![0, 1, 3, 4], "{events:?}");
        let aborted: Vec<bool> = events
            .iter()
            .filter_map(|e| match e {
                Event::Match(m) => Some(m["aborted"].as_bool().unwrap()),
                _ => None,
            })
            .collect();
        assert_eq!(aborted, [true, true, false, false], "{events:?}");
        let d = done(&events);
        assert_eq!(d["scanned"], 4, "{d}");
        assert_eq!(d["isolation"], "read_uncommitted", "{d}");
    }

    /// A scan for "needle" over an aborted transaction, a plain record and a committed transaction.
    fn aborted_and_committed(isolation: crate::walk::Isolation) -> Vec<Event> {
        use fjord_log::ControlType::{Abort, Commit};
        // Producer 5's transaction (0-1) is aborted at 2; producer 6's (4) committed at 5; 3 is no transaction's.
        let batches = [
            (0, txn_batch(0, 5, &["needle a", "needle b"])),
            (2, marker(2, 5, Abort)),
            (3, batch(3, &["needle kept"])),
            (4, txn_batch(4, 6, &["needle committed"])),
            (5, marker(5, 6, Commit)),
        ];
        let aborted = [fjord_log::AbortedTxn {
            producer_id: 5,
            first_offset: 0,
            last_offset: 2,
            last_stable_offset: 3,
        }];
        // As the partition answers: the batch holding the offset, and the aborted transactions reaching it.
        let mut read = |_: usize, offset: i64, _: usize, _: bool| {
            Ok(Chunk {
                records: batches
                    .iter()
                    .rev()
                    .find(|(base, _)| *base <= offset)
                    .map(|(_, b)| b.clone())
                    .unwrap_or_default(),
                aborted: aborted
                    .iter()
                    .filter(|a| a.last_offset >= offset)
                    .copied()
                    .collect(),
            })
        };
        let mut events = Vec::new();
        let far = Instant::now() + Duration::from_secs(60);
        let mut p = plan("needle", false, 0, 6, 100, 1000);
        p.isolation = isolation;
        scan(&p, &mut read, far, &mut |e| {
            events.push(e);
            true
        });
        events
    }

    #[test]
    fn a_segment_retention_deletes_mid_scan_moves_the_scan_to_the_new_log_start() {
        let batches = log(40);
        let mut reads = 0;
        // The first read finds offsets 0-9; by the second, retention has moved the log start to 30.
        let mut read = |_: usize, offset: i64, _: usize, _: bool| {
            reads += 1;
            if reads > 1 && offset < 30 {
                return Err(ReadError::Removed { log_start: 30 });
            }
            reader(&batches)(0, offset, 0, true)
        };
        let mut events = Vec::new();
        let far = Instant::now() + Duration::from_secs(60);
        scan(
            &plan("needle", true, 0, 40, 100, 1000),
            &mut read,
            far,
            &mut |e| {
                events.push(e);
                true
            },
        );
        assert_eq!(match_offsets(&events), vec![3, 31, 38], "{events:?}");
        let d = done(&events);
        assert_eq!(d["reason"], "end", "{d}");
        assert_eq!(d["scanned"], 20, "{d}");
        assert_eq!(
            d["removed"],
            json!([{"partition": 0, "from": 10, "to": 30}]),
            "{d}"
        );
        // Said as it happened, too.
        assert!(
            events
                .iter()
                .any(|e| matches!(e, Event::Progress(p) if p["removed"] == d["removed"])),
            "{events:?}"
        );
    }

    #[test]
    fn undecodable_bytes_are_an_error_event_not_a_panic() {
        let mut read = |_: usize, _: i64, _: usize, _: bool| {
            Ok(Chunk {
                records: Bytes::from_static(&[0u8; 70]),
                aborted: Vec::new(),
            })
        };
        let mut events = Vec::new();
        let far = Instant::now() + Duration::from_secs(60);
        scan(&plan("x", false, 0, 10, 10, 10), &mut read, far, &mut |e| {
            events.push(e);
            true
        });
        assert!(matches!(events.last(), Some(Event::Error(_))), "{events:?}");
    }

    #[test]
    fn substring_search_with_and_without_case() {
        assert!(contains(b"hello world", b"o w", false));
        assert!(contains(b"hello", b"hello", false));
        assert!(!contains(b"hell", b"hello", false));
        assert!(contains(b"HeLLo", b"llo", true));
        assert!(!contains(b"HeLLo", b"llo", false));
        assert!(contains(b"aaab", b"aab", false));
        assert!(contains(b"", b"", false));
        assert!(!contains(b"", b"a", true));
    }
}
