//! The broker-level storage fault harness: whole [`Partition`]s, opened by the [`PartitionManager`] over the
//! simulated disk ([`fjord_log::sim`]), so that what the log harness of fjord-log cannot see is covered too:
//! `partition.metadata`, producer-state snapshots, the rebuild of producer and transaction state at start-up,
//! and transaction markers. A seed drives plain, idempotent and transactional produces (acks=1 and acks=all),
//! commit and abort markers, housekeeping (rolls, flushes, snapshots), forced snapshots, idempotent retries,
//! injected I/O errors, clean shutdowns, process crashes and power losses. After every recovery it checks:
//!
//! - every batch acknowledged durable (acks=all, or a marker the coordinator saw synced) is present at its
//!   offsets, and everything durable before the crash is still there (the high watermark never goes back past
//!   it);
//! - every batch present is exactly one the harness appended at those offsets (no garbage, no duplicate of an
//!   idempotent retry);
//! - the producer state agrees with the log: each producer's last sequence and open transaction, the last
//!   stable offset, and the aborted transactions a read_committed fetch reports;
//! - an idempotent producer's retry of its last batch, and a retry of a batch whose outcome it never learnt, is
//!   appended exactly once across crashes (deduplicated from the snapshot or the rebuilt state);
//! - a transaction the coordinator decided is completed by re-sending its marker after a crash, as Kafka's
//!   coordinator does, and an injected error is an `Err` (the partition goes offline), never a panic.
//!
//! Retention, DeleteRecords and compaction are left to fjord-log's harness, which checks them against the log
//! alone; here they would only blur the producer-state model. Directories of the simulated disk are durable once
//! created; their entries (files) are not.
//!
//! Replay a failing seed with `FJORD_FAULT_SEED=<seed> cargo test -p fjord-broker partition_fault_harness --
//! --nocapture`; run more with `FJORD_FAULT_SEEDS=<count>` (and `FJORD_FAULT_STEPS=<steps per seed>`).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use bytes::BytesMut;
use fjord_log::sim::{Faults, SimRng, SimStorage};
use fjord_meta::{BrokerInfo, PartitionMeta, TopicMeta};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

use super::*;

const DEFAULT_SEEDS: u64 = 200;
const DEFAULT_STEPS: usize = 150;
const PRODUCERS: i64 = 4;

/// What the harness appended at some offsets.
#[derive(Clone, Debug, PartialEq)]
enum Entry {
    /// A data batch, known by its unique first timestamp.
    Data {
        pid: i64,
        seq: i32,
        count: i32,
        txn: bool,
        stamp: i64,
    },
    Marker {
        pid: i64,
        commit: bool,
    },
}

struct Appended {
    entry: Entry,
    last_offset: i64,
    /// The append returned `Ok` (an errored append may or may not have landed).
    acked: bool,
}

#[derive(Default)]
struct Producer {
    /// Transactional (every batch in a transaction) or only idempotent.
    transactional: bool,
    next_seq: i32,
    /// A transaction is open: batches were appended and no marker yet.
    txn_open: bool,
    /// The coordinator decided to end the open transaction (commit = true) but has not seen its marker synced:
    /// it re-sends the marker until it has, as Kafka's coordinator completes PrepareCommit/PrepareAbort.
    ending: Option<bool>,
    /// A batch whose append failed: the producer retries it after the broker comes back.
    pending: Option<Bytes>,
}

/// A batch found in the log by the scan.
struct Found {
    base: i64,
    last: i64,
    entry: Entry,
}

struct Harness {
    seed: u64,
    rng: SimRng,
    sim: SimStorage,
    faults: Faults,
    meta: ClusterState,
    cfg: BrokerConfig,
    pm: Option<PartitionManager>,
    part: Option<Arc<Partition>>,
    rt: tokio::runtime::Runtime,
    /// Everything appended, by base offset; entries at or above a recovered log end are forgotten.
    log: BTreeMap<i64, Appended>,
    /// The bytes of each data batch sent, by its unique stamp (for retries).
    sent: HashMap<i64, Bytes>,
    /// Offsets below this are durable.
    durable_end: i64,
    producers: BTreeMap<i64, Producer>,
    stamp: i64,
    trace: Vec<String>,
    recoveries: u64,
}

fn encode(pid: i64, seq: i32, count: i32, txn: bool, stamp: i64) -> Bytes {
    let records: Vec<Record> = (0..count)
        .map(|i| Record {
            transactional: txn,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: pid,
            producer_epoch: if pid < 0 { -1 } else { 0 },
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: if pid < 0 { -1 } else { seq + i },
            timestamp: stamp,
            key: None,
            value: Some(Bytes::from(format!("{pid}/{seq}/{i}/{stamp}"))),
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .expect("encode batch");
    buf.freeze()
}

fn is_fault(e: &Error) -> bool {
    e.is_disk_fault() || matches!(e, Error::Storage(_))
}

impl Harness {
    fn new(seed: u64) -> Harness {
        let mut rng = SimRng::new(seed);
        let sim = SimStorage::new(seed.wrapping_mul(131).wrapping_add(11));
        let faults = match rng.below(3) {
            0 => Faults::default(),
            1 => Faults {
                write: 0.005,
                fsync: 0.01,
                metadata: 0.005,
            },
            _ => Faults {
                write: 0.02,
                fsync: 0.04,
                metadata: 0.02,
            },
        };
        let mut configs = BTreeMap::new();
        configs.insert(
            "segment.bytes".to_string(),
            (1024 + rng.below(3072)).to_string(),
        );
        configs.insert(
            "index.interval.bytes".to_string(),
            (64 + rng.below(512)).to_string(),
        );
        let mut meta = ClusterState::default();
        meta.brokers.insert(
            1,
            BrokerInfo {
                id: 1,
                host: "h".into(),
                port: 1,
                rack: None,
            },
        );
        meta.topics.insert(
            "t".into(),
            TopicMeta {
                name: "t".into(),
                id: Uuid::from_u128(7),
                partitions: vec![PartitionMeta {
                    leader: 1,
                    leader_epoch: 0,
                    partition_epoch: 0,
                    replicas: vec![1],
                    isr: vec![1],
                    offline: Vec::new(),
                }],
                configs,
                internal: false,
                reassignments: Default::default(),
            },
        );
        let mut producers = BTreeMap::new();
        // Producer id 0 included: it is the first id the cluster hands out.
        for pid in 0..PRODUCERS {
            producers.insert(
                pid,
                Producer {
                    transactional: pid % 2 == 1,
                    ..Producer::default()
                },
            );
        }
        Harness {
            seed,
            rng,
            sim,
            faults,
            meta,
            cfg: BrokerConfig::from_properties(BTreeMap::new()).expect("default config"),
            pm: None,
            part: None,
            rt: tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("runtime"),
            log: BTreeMap::new(),
            sent: HashMap::new(),
            durable_end: 0,
            producers,
            // Unique, increasing, and within a day of now (the default `message.timestamp.*.max.ms` checks).
            stamp: now_ms() - 3_600_000,
            trace: Vec::new(),
            recoveries: 0,
        }
    }

    fn fail(&self, what: String) -> ! {
        let mut report = format!(
            "partition fault harness seed {} failed: {what}\nfaults: {:?}\nsim: {:?}\nrecoveries: {}\nlast operations (newest first):\n",
            self.seed,
            self.faults,
            self.sim.stats(),
            self.recoveries
        );
        for t in self.trace.iter().rev().take(40) {
            report.push_str("  ");
            report.push_str(t);
            report.push('\n');
        }
        report.push_str(&format!(
            "replay: FJORD_FAULT_SEED={} cargo test -p fjord-broker partition_fault_harness -- --nocapture",
            self.seed
        ));
        panic!("{report}");
    }

    fn p(&self) -> Arc<Partition> {
        Arc::clone(self.part.as_ref().expect("partition open"))
    }

    /// Starts the "broker": log directories and partition manager over the simulated disk. `Ok(false)` when the
    /// partition could not be opened (an injected fault).
    fn start(&mut self) -> bool {
        let storage: Arc<dyn Storage> = Arc::new(self.sim.clone());
        let dirs = match LogDirs::with_storage(
            &[PathBuf::from("/data")],
            &crate::metrics::Metrics::new(),
            storage,
        ) {
            Ok(d) => d,
            Err(e) if is_fault(&e) => return false,
            Err(e) => self.fail(format!("log dirs: {e}")),
        };
        let pm = PartitionManager::new(Arc::new(dirs), 1);
        if let Err(e) = pm.sync_with(&self.meta, &self.cfg) {
            self.fail(format!("sync_with returned an error: {e}"));
        }
        let p = match pm.online("t", 0) {
            Ok(Some(p)) => p,
            Ok(None) => self.fail("the partition is not hosted".into()),
            Err(e) if is_fault(&e) => return false,
            Err(e) => self.fail(format!(
                "the partition is offline for a non-fault reason: {e}"
            )),
        };
        self.part = Some(p);
        self.pm = Some(pm);
        true
    }

    /// Stops the broker: cleanly, by a process crash or by a power loss.
    fn stop(&mut self, how: u64) {
        let part = self.part.take();
        let pm = self.pm.take();
        drop(part);
        match how {
            0 => {
                self.trace.push("clean shutdown".into());
                if let Some(pm) = pm {
                    pm.close_all();
                }
            }
            1 => {
                self.trace.push("process crash".into());
                drop(pm);
                self.sim.process_crash();
            }
            _ => {
                self.trace.push("power loss".into());
                drop(pm);
                self.sim.power_loss();
            }
        }
    }

    /// Restarts until the partition opens (with faults for the first attempts, then without: a fault during
    /// recovery must leave a log that a later recovery completes), then checks everything.
    fn recover(&mut self) {
        self.recoveries += 1;
        for attempt in 0..6 {
            self.sim.set_faults(if attempt < 3 {
                self.faults
            } else {
                Faults::default()
            });
            if self.start() {
                self.sim.set_faults(self.faults);
                self.check_and_resume();
                return;
            }
            self.trace
                .push(format!("recovery attempt {attempt} hit an injected fault"));
            let how = if self.rng.chance(0.5) { 1 } else { 2 };
            self.stop(how);
        }
        self.fail("the partition did not open on a disk without faults".into());
    }

    /// Reads the whole log as the harness's entries.
    fn scan(&self) -> Vec<Found> {
        let p = self.p();
        let (start, hw) = p.offsets();
        if start != 0 {
            self.fail(format!("log start moved to {start} with no retention"));
        }
        let mut out = Vec::new();
        let mut offset = 0;
        while offset < hw {
            let r = match p.read(offset, 1 << 20, true) {
                Ok(r) => r,
                Err(e) => self.fail(format!("reading at {offset} after recovery: {e}")),
            };
            if r.records.is_empty() {
                // A gap up to the log end: an empty segment rolled at `hw` survived, the previous one's
                // unsynced tail did not.
                break;
            }
            let mut pos = 0;
            for b in fjord_log::batch_headers(&r.records) {
                let entry = if b.is_control {
                    match fjord_log::control_type(&r.records[pos..]) {
                        Some(kind) => Entry::Marker {
                            pid: b.producer_id,
                            commit: kind == ControlType::Commit,
                        },
                        None => self.fail(format!("unreadable control batch at {}", b.base_offset)),
                    }
                } else {
                    Entry::Data {
                        pid: b.producer_id,
                        seq: b.base_sequence,
                        count: b.record_count,
                        txn: b.is_transactional,
                        stamp: b.first_timestamp,
                    }
                };
                // A gap is legal (Kafka's logs have them: compaction, and here a segment whose unsynced tail
                // was lost while the next one's data survived); whatever was durable in it is checked below.
                if b.base_offset < offset {
                    self.fail(format!(
                        "batch at {} overlaps the one before (which ended at {})",
                        b.base_offset,
                        offset - 1
                    ));
                }
                out.push(Found {
                    base: b.base_offset,
                    last: b.last_offset,
                    entry,
                });
                offset = b.last_offset + 1;
                pos += b.size;
            }
        }
        out
    }

    fn check_and_resume(&mut self) {
        let p = self.p();
        let hw = p.high_watermark();
        if hw < self.durable_end {
            self.fail(format!(
                "high watermark {hw} after recovery is below the durable end {}",
                self.durable_end
            ));
        }
        let found = self.scan();
        // Everything present was appended by us, at exactly these offsets.
        for f in &found {
            match self.log.get(&f.base) {
                Some(a) if a.entry == f.entry && a.last_offset == f.last => {}
                Some(a) => self.fail(format!(
                    "at {} the log holds {:?}..{} but {:?}..{} was appended there",
                    f.base, f.entry, f.last, a.entry, a.last_offset
                )),
                None => self.fail(format!(
                    "at {} the log holds {:?}, which was never appended there",
                    f.base, f.entry
                )),
            }
        }
        // Everything durable is present.
        let present: HashMap<i64, ()> = found.iter().map(|f| (f.base, ())).collect();
        for (base, a) in &self.log {
            if a.last_offset < self.durable_end && !present.contains_key(base) {
                self.fail(format!(
                    "durable batch {:?} at {base}..{} is gone",
                    a.entry, a.last_offset
                ));
            }
        }
        // What was not durable and is gone is forgotten; its offsets will be handed out again.
        self.log.retain(|base, _| present.contains_key(base));
        for a in self.log.values_mut() {
            a.acked = true;
        }
        // Recovery fsyncs what it kept.
        self.durable_end = hw;

        // The model of producer state, from the log alone.
        let mut last_seq: BTreeMap<i64, (i32, i64)> = BTreeMap::new();
        let mut open: BTreeMap<i64, i64> = BTreeMap::new();
        // (producer id, first offset, marker offset) of each aborted transaction.
        let mut aborted: Vec<(i64, i64, i64)> = Vec::new();
        for f in &found {
            match &f.entry {
                Entry::Data {
                    pid,
                    seq,
                    count,
                    txn,
                    ..
                } if *pid >= 0 => {
                    last_seq.insert(*pid, (seq + count - 1, f.base));
                    if *txn {
                        open.entry(*pid).or_insert(f.base);
                    }
                }
                Entry::Marker { pid, commit } => {
                    if let Some(first) = open.remove(pid) {
                        if !commit {
                            aborted.push((*pid, first, f.base));
                        }
                    }
                }
                _ => {}
            }
        }
        let views: BTreeMap<i64, ProducerView> = p
            .producers()
            .into_iter()
            .map(|v| (v.producer_id, v))
            .collect();
        for (pid, (seq, _)) in &last_seq {
            match views.get(pid) {
                Some(v) if v.last_sequence == *seq => {}
                Some(v) => self.fail(format!(
                    "producer {pid}: state says last sequence {}, the log {seq}",
                    v.last_sequence
                )),
                None => self.fail(format!(
                    "producer {pid} has batches in the log but no state"
                )),
            }
        }
        for (pid, v) in &views {
            if !last_seq.contains_key(pid) {
                self.fail(format!(
                    "producer {pid} has state (last sequence {}) but no batch in the log",
                    v.last_sequence
                ));
            }
            let want = open.get(pid).copied().unwrap_or(-1);
            if v.current_txn_start_offset != want {
                self.fail(format!(
                    "producer {pid}: state says open transaction from {}, the log {want}",
                    v.current_txn_start_offset
                ));
            }
        }
        let lso = open.values().min().copied().unwrap_or(hw);
        if p.last_stable_offset() != lso {
            self.fail(format!(
                "last stable offset {} where the log's open transactions give {lso}",
                p.last_stable_offset()
            ));
        }
        // read_committed fetches, of everything and of a small window from a random offset, report exactly the
        // aborted transactions with records in what they return.
        let from = if hw > 0 {
            self.rng.below(hw as u64) as i64
        } else {
            0
        };
        for (from, max_bytes) in [(0, 64 << 20), (from, 300)] {
            match p.fetch(from, max_bytes, true, true) {
                Ok(r) => {
                    let Some(end) = fjord_log::batch_headers(&r.records)
                        .last()
                        .map(|b| b.last_offset + 1)
                    else {
                        continue;
                    };
                    let mut got: Vec<(i64, i64, i64)> = r
                        .aborted
                        .iter()
                        .map(|a| (a.producer_id, a.first_offset, a.last_offset))
                        .collect();
                    got.sort_unstable();
                    let mut want: Vec<(i64, i64, i64)> = aborted
                        .iter()
                        .copied()
                        .filter(|a| a.1 < end && a.2 >= from)
                        .collect();
                    want.sort_unstable();
                    if got != want {
                        self.fail(format!(
                            "read_committed fetch of {from}..{end} reports aborted {got:?}, the log has {want:?}"
                        ));
                    }
                }
                Err(e) => self.fail(format!("read_committed fetch after recovery: {e}")),
            }
        }

        // The producers resume: each retries the batch it never got an answer for, then goes on from where the
        // log says it stands (a batch acknowledged with acks=1 and lost with the power is gone, as in Kafka).
        let pids: Vec<i64> = self.producers.keys().copied().collect();
        for pid in pids {
            let next = last_seq.get(&pid).map_or(0, |(s, _)| s + 1);
            let pending = self
                .producers
                .get_mut(&pid)
                .and_then(|pr| pr.pending.take());
            {
                let pr = self.producers.get_mut(&pid).expect("producer");
                pr.next_seq = next;
                pr.txn_open = open.contains_key(&pid);
            }
            if let Some(bytes) = pending {
                let b = fjord_log::batch_headers(&bytes).next().expect("a batch");
                let landed = found.iter().find(
                    |f| matches!(&f.entry, Entry::Data { stamp, .. } if *stamp == b.first_timestamp),
                );
                if let Some(f) = landed {
                    // It landed and survived: the retry must be a duplicate with the original offsets.
                    self.trace.push(format!(
                        "retry of producer {pid}'s unanswered batch (landed at {})",
                        f.base
                    ));
                    if !self.retry_is_duplicate(&bytes, f.base) {
                        return;
                    }
                } else if b.base_sequence == next && !self.producers[&pid].transactional {
                    self.trace
                        .push(format!("retry of producer {pid}'s unanswered batch (lost)"));
                    if !self.append_data(pid, bytes) {
                        return;
                    }
                }
            }
            if let Some(commit) = self.producers[&pid].ending {
                if self.producers[&pid].txn_open {
                    self.trace
                        .push(format!("coordinator re-sends producer {pid}'s marker"));
                    if !self.end_txn(pid, commit) {
                        return;
                    }
                } else {
                    self.producers.get_mut(&pid).expect("producer").ending = None;
                }
            }
        }
        // The last batch of each idempotent producer is deduplicated across the restart.
        for (pid, (_, base)) in &last_seq {
            let pr = &self.producers[pid];
            if pr.transactional && !pr.txn_open {
                continue;
            }
            let stamp = match self.log.get(base).map(|a| &a.entry) {
                Some(Entry::Data { stamp, .. }) => *stamp,
                _ => continue,
            };
            if let Some(bytes) = self.sent.get(&stamp).cloned() {
                self.trace
                    .push(format!("retry of producer {pid}'s last batch at {base}"));
                if !self.retry_is_duplicate(&bytes, *base) {
                    return;
                }
            }
        }
    }

    /// Re-sends a batch that is in the log at `base`: it must be acknowledged with those offsets and not
    /// appended again. `false` when a fault took the partition down meanwhile.
    fn retry_is_duplicate(&mut self, bytes: &Bytes, base: i64) -> bool {
        let p = self.p();
        let hw = p.high_watermark();
        match p.append(bytes.clone()) {
            Ok(info) if info.base_offset == base && info.batches.is_empty() => {
                if p.high_watermark() != hw {
                    self.fail(format!("a duplicate moved the high watermark from {hw}"));
                }
                true
            }
            Ok(info) => self.fail(format!(
                "a retry of the batch at {base} was appended again at {}",
                info.base_offset
            )),
            Err(e) if is_fault(&e) => {
                self.crash_after_fault(&e);
                false
            }
            Err(e) => self.fail(format!("a retry of the batch at {base} was refused: {e}")),
        }
    }

    fn crash_after_fault(&mut self, e: &Error) {
        self.trace.push(format!("  -> fault: {e}"));
        if self.p().check_online().is_ok() {
            self.fail(format!("an I/O error ({e}) left the partition online"));
        }
        let how = 1 + self.rng.below(2);
        self.stop(how);
        self.recover();
    }

    /// Waits until everything below `end` is durable; `false` after a fault (handled: crash and recovery).
    fn sync(&mut self, end: i64) -> bool {
        let p = self.p();
        match self.rt.block_on(p.wait_durable(end)) {
            Ok(()) => {
                self.durable_end = self.durable_end.max(end);
                true
            }
            Err(e) if is_fault(&e) => {
                self.crash_after_fault(&e);
                false
            }
            Err(e) => self.fail(format!("fsync: {e}")),
        }
    }

    /// Appends a data batch of producer `pid` (-1: plain). `false` after a fault.
    fn append_data(&mut self, pid: i64, bytes: Bytes) -> bool {
        let b = fjord_log::batch_headers(&bytes).next().expect("a batch");
        let entry = Entry::Data {
            pid,
            seq: b.base_sequence,
            count: b.record_count,
            txn: b.is_transactional,
            stamp: b.first_timestamp,
        };
        self.sent.insert(b.first_timestamp, bytes.clone());
        let p = self.p();
        let base = p.high_watermark();
        self.trace.push(format!("append {entry:?} at {base}"));
        match p.append(bytes.clone()) {
            Ok(info) => {
                if info.base_offset != base || info.batches.len() != 1 {
                    self.fail(format!(
                        "append expected at {base} went to {} ({} batches: {:?}; sent {:?})",
                        info.base_offset,
                        info.batches.len(),
                        info.batches,
                        fjord_log::batch_headers(&bytes).collect::<Vec<_>>()
                    ));
                }
                self.log.insert(
                    base,
                    Appended {
                        entry,
                        last_offset: info.last_offset,
                        acked: true,
                    },
                );
                if let Some(pr) = self.producers.get_mut(&pid) {
                    pr.next_seq = b.base_sequence + b.record_count;
                    if b.is_transactional {
                        pr.txn_open = true;
                    }
                }
                if self.rng.chance(0.4) {
                    self.trace.push("  acks=all".into());
                    return self.sync(info.last_offset + 1);
                }
                true
            }
            Err(e) if is_fault(&e) => {
                // It may have landed (a torn write is cut by recovery; a whole one is kept).
                self.log.insert(
                    base,
                    Appended {
                        entry,
                        last_offset: base + b.record_count as i64 - 1,
                        acked: false,
                    },
                );
                if let Some(pr) = self.producers.get_mut(&pid) {
                    pr.pending = Some(bytes);
                }
                self.crash_after_fault(&e);
                false
            }
            Err(e) => self.fail(format!("append refused: {e}")),
        }
    }

    /// Writes the marker ending producer `pid`'s transaction and waits for it to be durable (the coordinator
    /// completes a transaction only then). `false` after a fault.
    fn end_txn(&mut self, pid: i64, commit: bool) -> bool {
        self.producers.get_mut(&pid).expect("producer").ending = Some(commit);
        let p = self.p();
        let base = p.high_watermark();
        let entry = Entry::Marker { pid, commit };
        self.trace.push(format!("append {entry:?} at {base}"));
        let kind = if commit {
            ControlType::Commit
        } else {
            ControlType::Abort
        };
        match p.append_marker(pid, 0, kind, 0) {
            Ok((offset, _)) => {
                if offset != base {
                    self.fail(format!("marker expected at {base} went to {offset}"));
                }
                self.log.insert(
                    base,
                    Appended {
                        entry,
                        last_offset: base,
                        acked: true,
                    },
                );
                self.producers.get_mut(&pid).expect("producer").txn_open = false;
                if !self.sync(base + 1) {
                    return false;
                }
                self.producers.get_mut(&pid).expect("producer").ending = None;
                true
            }
            Err(e) if is_fault(&e) => {
                self.log.insert(
                    base,
                    Appended {
                        entry,
                        last_offset: base,
                        acked: false,
                    },
                );
                self.crash_after_fault(&e);
                false
            }
            Err(e) => self.fail(format!("marker refused: {e}")),
        }
    }

    fn step(&mut self) {
        self.stamp += 1;
        let stamp = self.stamp;
        let count = 1 + self.rng.below(4) as i32;
        match self.rng.below(100) {
            0..=14 => {
                // One record: the encoder splits records without sequences into batches of one.
                let bytes = encode(-1, -1, 1, false, stamp);
                self.append_data(-1, bytes);
            }
            15..=59 => {
                let pid = self.rng.below(PRODUCERS as u64) as i64;
                let pr = &self.producers[&pid];
                if pr.ending.is_some() {
                    return;
                }
                let bytes = encode(pid, pr.next_seq, count, pr.transactional, stamp);
                self.append_data(pid, bytes);
            }
            60..=74 => {
                let open: Vec<i64> = self
                    .producers
                    .iter()
                    .filter(|(_, p)| p.txn_open)
                    .map(|(pid, _)| *pid)
                    .collect();
                if !open.is_empty() {
                    let pid = open[self.rng.below(open.len() as u64) as usize];
                    let commit = self.rng.chance(0.5);
                    self.end_txn(pid, commit);
                }
            }
            75..=82 => {
                self.trace.push("housekeeping".into());
                if let Err(e) = self.p().housekeeping(false, i64::MAX / 4) {
                    if !is_fault(&e) {
                        self.fail(format!("housekeeping: {e}"));
                    }
                    self.crash_after_fault(&e);
                }
            }
            83..=86 => {
                self.trace.push("forced snapshot".into());
                if let Err(e) = self.p().maybe_snapshot(true) {
                    if !is_fault(&e) {
                        self.fail(format!("snapshot: {e}"));
                    }
                    self.crash_after_fault(&e);
                }
            }
            87..=88 => {
                let end = self.p().high_watermark();
                self.trace.push(format!("flush to {end}"));
                self.sync(end);
            }
            89 => {
                // The periodic flush (`log.flush.interval.ms`) and shutdown path, outside the log lock.
                let end = self.p().high_watermark();
                self.trace.push(format!("periodic flush to {end}"));
                match self.p().flush() {
                    Ok(()) => self.durable_end = self.durable_end.max(end),
                    Err(e) if is_fault(&e) => self.crash_after_fault(&e),
                    Err(e) => self.fail(format!("flush: {e}")),
                }
            }
            90..=93 => {
                // A retry of a batch already acknowledged (the answer was lost on the way).
                let candidates: Vec<(i64, i64)> = self
                    .log
                    .iter()
                    .rev()
                    .filter_map(|(base, a)| match &a.entry {
                        Entry::Data { pid, stamp, .. } if *pid >= 0 && a.acked => {
                            Some((*base, *stamp))
                        }
                        _ => None,
                    })
                    .take(1)
                    .collect();
                if let Some((base, stamp)) = candidates.first().copied() {
                    let pid = match &self.log[&base].entry {
                        Entry::Data { pid, .. } => *pid,
                        _ => unreachable!(),
                    };
                    let pr = &self.producers[&pid];
                    if pr.transactional && !pr.txn_open {
                        return;
                    }
                    let bytes = self.sent[&stamp].clone();
                    self.trace
                        .push(format!("retry of the acked batch at {base}"));
                    self.retry_is_duplicate(&bytes, base);
                }
            }
            _ => {
                let how = self.rng.below(3);
                self.stop(how);
                self.recover();
            }
        }
    }

    fn run(&mut self, steps: usize) {
        self.sim.set_faults(self.faults);
        if !self.start() {
            self.recover();
        }
        for _ in 0..steps {
            self.step();
        }
        // A final power loss and recovery on a perfect disk: everything durable must come back.
        self.faults = Faults::default();
        self.stop(2);
        self.recover();
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

#[test]
fn partition_fault_harness() {
    let steps = env_u64("FJORD_FAULT_STEPS").map_or(DEFAULT_STEPS, |s| s as usize);
    let seeds: Vec<u64> = match env_u64("FJORD_FAULT_SEED") {
        Some(seed) => vec![seed],
        None => (0..env_u64("FJORD_FAULT_SEEDS").unwrap_or(DEFAULT_SEEDS)).collect(),
    };
    let mut recoveries = 0;
    let mut faults = 0;
    for seed in seeds {
        let mut h = Harness::new(seed);
        h.run(steps);
        recoveries += h.recoveries;
        let s = h.sim.stats();
        faults += s.failed_writes + s.failed_fsyncs + s.failed_metadata;
    }
    // The harness is only worth something if it crashed and injected faults.
    assert!(recoveries > 0, "no recovery was exercised");
    if env_u64("FJORD_FAULT_SEED").is_none() {
        assert!(faults > 0, "no fault was injected");
    }
}
