//! The storage fault harness: the real log over the simulated disk ([`crate::sim`]), driven by a seed through
//! random appends (acks=1 and acks=all), rolls, retention, DeleteRecords, compaction, aborted transactions,
//! injected I/O errors, process crashes and power losses. After every recovery it checks:
//!
//! - every acknowledged acks=all record (and everything a recovery already made durable) is present at its
//!   offset with its content, unless retention, DeleteRecords or compaction (a later durable record with the same
//!   key) removed it;
//! - every record present is exactly the one appended at that offset (no garbage, nothing misplaced);
//! - the log end offset never falls below what was durable (offsets of durable records are never reused, the
//!   high watermark never goes back past them); the log start offset never passes what was requested;
//! - indexes agree with the segment files;
//! - an aborted transaction whose index entry was synced is still reported;
//! - an injected error is an `Err` (never a panic) and fails the log: nothing more is written until reopened.
//!
//! A failing seed is printed with the operations that led to it. Replay one with
//! `FJORD_FAULT_SEED=<seed> cargo test -p fjord-log fault_harness -- --nocapture`; run many more with
//! `FJORD_FAULT_SEEDS=<count>` (and `FJORD_FAULT_STEPS=<steps per seed>`). CI runs the default count.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use super::*;
use crate::sim::{Faults, SimRng, SimStorage};
use crate::storage::Storage;
use crate::{AbortedTxn, ControlType};

const DEFAULT_SEEDS: u64 = 150;
const DEFAULT_STEPS: usize = 120;

#[derive(Clone, Debug, PartialEq)]
struct Rec {
    key: String,
    value: String,
    /// Records of aborted transactions may vanish (compaction drops them); control records are not compared.
    required: bool,
}

struct Harness {
    seed: u64,
    rng: SimRng,
    sim: SimStorage,
    storage: Arc<dyn Storage>,
    dir: PathBuf,
    cfg: LogConfig,
    compact: bool,
    faults: Faults,
    log: Option<Log>,
    now: i64,
    /// Every record appended (acks=1 at least) by offset; entries above a crash's recovered end are forgotten.
    written: BTreeMap<i64, Rec>,
    /// Offsets below this are durable: acknowledged with acks=all, or made durable by a recovery.
    durable_end: i64,
    /// Highest log start offset ever requested or reached.
    max_start: i64,
    /// Aborted transactions whose `.txnindex` entry was synced.
    aborts: Vec<AbortedTxn>,
    next_pid: i64,
    /// The leader epoch appends are written in; bumped now and then (a leader change).
    epoch: i32,
    unique: u64,
    trace: Vec<String>,
    checks: u64,
}

impl Harness {
    fn new(seed: u64) -> Harness {
        let mut rng = SimRng::new(seed);
        let sim = SimStorage::new(seed.wrapping_mul(31).wrapping_add(7));
        let compact = rng.chance(0.4);
        let retention = rng.chance(0.3);
        let cfg = LogConfig {
            segment_bytes: 1024 + rng.below(3072),
            index_interval_bytes: 64 + rng.below(512),
            cleanup_compact: compact,
            cleanup_delete: !compact || rng.chance(0.5),
            retention_bytes: if retention { 6000 } else { -1 },
            min_cleanable_dirty_ratio: 0.01,
            delete_retention_ms: i64::MAX / 4,
            ..LogConfig::default()
        };
        let faults = match rng.below(3) {
            0 => Faults::default(),
            1 => Faults {
                write: 0.005,
                fsync: 0.01,
                metadata: 0.005,
            },
            _ => Faults {
                write: 0.03,
                fsync: 0.05,
                metadata: 0.03,
            },
        };
        Harness {
            seed,
            rng,
            storage: Arc::new(sim.clone()),
            sim,
            dir: PathBuf::from("/data/topic-0"),
            cfg,
            compact,
            faults,
            log: None,
            now: NOW,
            written: BTreeMap::new(),
            durable_end: 0,
            max_start: 0,
            aborts: Vec::new(),
            next_pid: 1,
            epoch: 0,
            unique: 0,
            trace: Vec::new(),
            checks: 0,
        }
    }

    fn fail(&self, what: String) -> ! {
        let tail: Vec<&String> = self.trace.iter().rev().take(40).collect();
        let mut report = format!(
            "fault harness seed {} failed: {what}\nconfig: {:?}\nfaults: {:?}\nsim: {:?}\nlast operations (newest first):\n",
            self.seed,
            self.cfg,
            self.faults,
            self.sim.stats()
        );
        for t in tail {
            report.push_str("  ");
            report.push_str(t);
            report.push('\n');
        }
        report.push_str(&format!(
            "replay: FJORD_FAULT_SEED={} cargo test -p fjord-log fault_harness -- --nocapture",
            self.seed
        ));
        panic!("{report}");
    }

    fn key(&mut self) -> String {
        if self.compact && self.rng.chance(0.5) {
            format!("k{}", self.rng.below(6))
        } else {
            self.unique += 1;
            format!("u{}", self.unique)
        }
    }

    /// Opens the log, first with faults on (the open may fail, never panic), then on a perfect disk, where it must
    /// succeed; then checks every invariant.
    fn reopen(&mut self) {
        if std::env::var("FJORD_FAULT_DEBUG").is_ok() {
            let mut names = self.storage.list(&self.dir).unwrap_or_default();
            names.sort();
            let tail: Vec<String> = names
                .iter()
                .rev()
                .take(12)
                .map(|n| {
                    let len = self.storage.read(&self.dir.join(n)).map_or(0, |b| b.len());
                    format!("{}:{len}", n.trim_start_matches('0'))
                })
                .collect();
            self.trace
                .push(format!("files before open (last): {tail:?}"));
        }
        self.sim.set_faults(self.faults);
        if self.rng.chance(0.5) {
            if self.try_open("open (faults on)") {
                return;
            }
            self.sim.process_crash();
        }
        self.sim.set_faults(Faults::default());
        if !self.try_open("open") {
            let e = self.trace.last().cloned().unwrap_or_default();
            self.fail(format!("recovery on a healthy disk failed: {e}"));
        }
    }

    /// One attempt to open the log; on success the invariants are checked.
    fn try_open(&mut self, what: &str) -> bool {
        match Log::open_with(
            Arc::clone(&self.storage),
            &self.dir,
            self.cfg.clone(),
            self.now,
        ) {
            Ok(log) => {
                self.trace.push(format!(
                    "{what}: ok, {}..{}",
                    log.log_start_offset(),
                    log.log_end_offset()
                ));
                self.log = Some(log);
                self.after_open();
                true
            }
            Err(e) => {
                self.trace.push(format!("{what}: {e}"));
                false
            }
        }
    }

    fn after_open(&mut self) {
        self.sim.set_faults(Faults::default());
        let present = self.check();
        // A successful open fsynced everything it kept. What it did not keep was never durable (check() made
        // sure): a power loss may lose acks=1 records anywhere above the durable end, even before later ones
        // that survived, as in Kafka; their offsets are not handed out again.
        let leo = self.log().log_end_offset();
        self.written
            .retain(|o, _| *o < leo && present.contains_key(o));
        // Records of appends whose outcome was indeterminate are now durable too (those of aborted
        // transactions, key "t", may still go: compaction drops them).
        for rec in self.written.values_mut() {
            if rec.key != "t" {
                rec.required = true;
            }
        }
        self.durable_end = self.durable_end.max(leo);
        self.sim.set_faults(self.faults);
    }

    fn log(&mut self) -> &mut Log {
        self.log.as_mut().expect("open")
    }

    fn crash(&mut self) {
        self.log = None;
        if self.rng.chance(0.5) {
            self.trace.push("power loss".into());
            self.sim.power_loss();
        } else {
            self.trace.push("process crash".into());
            self.sim.process_crash();
        }
        self.reopen();
    }

    /// An operation failed: it must be a storage error that failed the log, and the broker would restart it.
    fn on_error(&mut self, op: &str, e: Error) {
        self.trace.push(format!("{op}: {e}"));
        if !e.is_storage_error() {
            self.fail(format!("{op} failed with a non-storage error: {e}"));
        }
        let log = self.log.as_mut().expect("open");
        if log.failure().is_none() {
            self.fail(format!("{op} failed ({e}) but the log did not go offline"));
        }
        if log
            .append(
                values_batch("after-failure", 1, self.now),
                self.epoch,
                self.now,
            )
            .is_ok()
        {
            self.fail("a failed log accepted an append".into());
        }
        self.crash();
    }

    fn append(&mut self) {
        let n = 1 + self.rng.below(4) as usize;
        let recs: Vec<(String, String)> = (0..n)
            .map(|_| {
                let key = self.key();
                let len = 1 + self.rng.below(200) as usize;
                let value: String = format!("{}:{}", self.unique, "x".repeat(len));
                (key, value)
            })
            .collect();
        let compression = match self.rng.below(4) {
            0 => Compression::Lz4,
            1 => Compression::Zstd,
            _ => Compression::None,
        };
        let batch = kv_batch(
            &recs
                .iter()
                .map(|(k, v)| (Some(k.as_str()), Some(v.as_str()), self.now))
                .collect::<Vec<_>>(),
            compression,
        );
        let acks_all = self.rng.chance(0.5);
        let now = self.now;
        let leo = self.log().log_end_offset();
        let epoch = self.epoch;
        match self.log().append(batch, epoch, now) {
            Ok(info) => {
                for (i, (key, value)) in recs.into_iter().enumerate() {
                    self.written.insert(
                        info.base_offset + i as i64,
                        Rec {
                            key,
                            value,
                            required: true,
                        },
                    );
                }
                self.trace.push(format!(
                    "append {n} at {} (acks={})",
                    info.base_offset,
                    if acks_all { "all" } else { "1" }
                ));
                if acks_all {
                    self.flush("acks=all flush");
                }
            }
            Err(e) => {
                // A failed append may still be on disk (e.g. its data was written and then its index write
                // failed): the outcome is indeterminate, as for a Kafka produce that got an error, so the
                // records may appear, but only where and as they were sent.
                for (i, (key, value)) in recs.into_iter().enumerate() {
                    self.written.insert(
                        leo + i as i64,
                        Rec {
                            key,
                            value,
                            required: false,
                        },
                    );
                }
                self.on_error("append", e)
            }
        }
    }

    /// True when the flush succeeded (false: it failed and the log was restarted).
    fn flush(&mut self, what: &str) -> bool {
        let leo = self.log().log_end_offset();
        match self.log().flush() {
            Ok(()) => {
                self.durable_end = self.durable_end.max(leo);
                self.trace.push(format!("{what}: durable to {leo}"));
                true
            }
            Err(e) => {
                self.on_error(what, e);
                false
            }
        }
    }

    fn aborted_transaction(&mut self) {
        let pid = self.next_pid;
        self.next_pid += 1;
        let rec = Record {
            transactional: true,
            producer_id: pid,
            producer_epoch: 0,
            sequence: 0,
            ..record(Some("t"), Some("aborted"), self.now, 0)
        };
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            [&rec],
            &RecordEncodeOptions {
                version: 2,
                compression: Compression::None,
            },
        )
        .unwrap();
        let now = self.now;
        let leo = self.log().log_end_offset();
        // Written first: the append's outcome may be indeterminate (see `append`).
        self.written.insert(
            leo,
            Rec {
                key: "t".into(),
                value: "aborted".into(),
                required: false,
            },
        );
        let epoch = self.epoch;
        let first = match self.log().append(buf.freeze(), epoch, now) {
            Ok(info) => info.base_offset,
            Err(e) => return self.on_error("txn append", e),
        };
        let marker = crate::control_batch(pid, 0, ControlType::Abort, 0, now);
        let last = match self.log().append(marker, epoch, now) {
            Ok(info) => info.base_offset,
            Err(e) => return self.on_error("abort marker", e),
        };
        let entry = AbortedTxn {
            producer_id: pid,
            first_offset: first,
            last_offset: last,
            last_stable_offset: last + 1,
        };
        if let Err(e) = self.log().add_aborted_txn(entry) {
            return self.on_error("add_aborted_txn", e);
        }
        self.trace
            .push(format!("aborted txn {pid} {first}..{last}"));
        // Only an entry whose sync succeeded on this very log is required to survive (the broker re-indexes
        // the markers after its newest producer snapshot, which is taken only after such a sync).
        if self.rng.chance(0.7) && self.flush("txn flush") {
            match self.log().sync_txn_indexes() {
                Ok(()) => self.aborts.push(entry),
                Err(e) => self.on_error("sync_txn_indexes", e),
            }
        }
    }

    fn retention(&mut self) {
        self.now += 1000;
        let now = self.now;
        match self.log().enforce_retention(now) {
            Ok(n) => {
                let start = self.log().log_start_offset();
                self.max_start = self.max_start.max(start);
                self.trace
                    .push(format!("retention: {n} deleted, start {start}"));
            }
            Err(e) => self.on_error("retention", e),
        }
    }

    fn delete_records(&mut self) {
        let (start, end) = (self.log().log_start_offset(), self.log().log_end_offset());
        if end <= start {
            return;
        }
        // Small steps, so the log keeps most of its data.
        let to = start + self.rng.below(((end - start) / 8).max(1) as u64 + 1) as i64;
        self.max_start = self.max_start.max(to);
        match self.log().delete_records_before(to) {
            Ok(s) => self
                .trace
                .push(format!("delete records before {to}: start {s}")),
            Err(e) => self.on_error("delete records", e),
        }
    }

    fn compaction(&mut self) {
        let now = self.now;
        let stable = self.log().log_end_offset();
        let Some(plan) = self.log().plan_compaction(now, stable) else {
            return;
        };
        match plan.run() {
            Ok(result) => match self.log().finish_compaction(result) {
                Ok(n) => self.trace.push(format!("compaction reclaimed {n}")),
                Err(e) => self.on_error("finish compaction", e),
            },
            Err(e) => {
                // The pass failed before touching the log: the log itself may still be healthy, but a storage
                // error must be reported as one.
                self.trace.push(format!("compaction pass: {e}"));
                if !e.is_storage_error() {
                    self.fail(format!("compaction failed with a non-storage error: {e}"));
                }
            }
        }
    }

    /// The invariants, on a freshly opened log. Returns the records present.
    fn check(&mut self) -> BTreeMap<i64, Rec> {
        self.checks += 1;
        let log = self.log.as_ref().expect("open");
        let (start, end) = (log.log_start_offset(), log.log_end_offset());
        if end < self.durable_end {
            self.fail(format!(
                "log end {end} fell below the durable end {}",
                self.durable_end
            ));
        }
        if start > self.max_start.max(0) && start > log.segments[0].base_offset {
            self.fail(format!(
                "log start {start} passed every start ever requested ({})",
                self.max_start
            ));
        }
        if let Err(e) = log.check_consistency() {
            self.fail(format!("indexes disagree with the log: {e}"));
        }
        let read = match log.read(start, usize::MAX / 2, end, true) {
            Ok(r) => r,
            Err(e) => self.fail(format!("reading the whole log failed: {e}")),
        };
        let mut bytes = read.records.clone();
        let mut present: BTreeMap<i64, Rec> = BTreeMap::new();
        let sets = match kafka_protocol::records::RecordBatchDecoder::decode_all(&mut bytes) {
            Ok(s) => s,
            Err(e) => self.fail(format!("the log holds undecodable data: {e}")),
        };
        // The leader epoch cache agrees with the epoch every batch present was written in, its entries
        // increase, none starts at or beyond the log end, and the newest epoch ends at the log end.
        let epochs = log.leader_epochs();
        if epochs.windows(2).any(|w| w[0].0 >= w[1].0 || w[0].1 >= w[1].1)
            // (An entry may start at the log end only as the one clamped to the log start of an emptied log.)
            || epochs.last().is_some_and(|(_, s)| *s > end || (*s == end && end != start))
            || epochs.first().is_some_and(|(_, s)| *s < start)
        {
            self.fail(format!(
                "leader epoch entries {epochs:?} are inconsistent with the log {start}..{end}"
            ));
        }
        if let Some(latest) = log.latest_epoch() {
            if log.end_offset_for_epoch(latest) != (latest, end) {
                self.fail(format!(
                    "the latest epoch {latest} ends at {:?}, not at the log end {end}",
                    log.end_offset_for_epoch(latest)
                ));
            }
        }
        for set in &sets {
            for r in &set.records {
                // A batch may straddle the log start; what lies before it is gone as far as the cache knows.
                if r.offset >= start && log.epoch_at(r.offset) != Some(r.partition_leader_epoch) {
                    self.fail(format!(
                        "offset {} was written in leader epoch {} but the epoch cache ({epochs:?}) says {:?}",
                        r.offset,
                        r.partition_leader_epoch,
                        log.epoch_at(r.offset)
                    ));
                }
            }
        }
        for set in sets {
            for r in set.records {
                if r.control {
                    continue;
                }
                let text = |b: Option<Bytes>| {
                    String::from_utf8(b.unwrap_or_default().to_vec()).unwrap_or_default()
                };
                present.insert(
                    r.offset,
                    Rec {
                        key: text(r.key),
                        value: text(r.value),
                        required: r.transactional,
                    },
                );
            }
        }
        for (o, rec) in &present {
            if *o < start {
                continue;
            }
            match self.written.get(o) {
                Some(w) if w.key == rec.key && w.value == rec.value => {}
                other => self.fail(format!(
                    "offset {o} holds {rec:?}, but {other:?} was written there"
                )),
            }
        }
        let upper = self.durable_end.min(end).max(start);
        for (o, w) in self.written.range(start..upper) {
            if !w.required || present.contains_key(o) {
                continue;
            }
            let superseded = self.compact
                && self
                    .written
                    .range(o + 1..self.durable_end)
                    .any(|(_, later)| later.key == w.key && later.required);
            if !superseded {
                let segments: Vec<(i64, i64, u64)> = log
                    .segments
                    .iter()
                    .map(|s| (s.base_offset, s.next_offset, s.size))
                    .collect();
                let near: Vec<&i64> = present.range(o - 5..o + 5).map(|(k, _)| k).collect();
                self.fail(format!(
                    "acknowledged record at {o} ({} = {}) is missing (log {start}..{end}, durable to {}); \
                     segments (base, next, size) {segments:?}; offsets present near it {near:?}",
                    w.key,
                    &w.value[..w.value.len().min(20)],
                    self.durable_end
                ));
            }
        }
        for a in &self.aborts {
            if a.last_offset < start || a.last_offset >= end {
                continue;
            }
            if !log
                .aborted_between(a.first_offset, a.last_offset + 1)
                .iter()
                .any(|x| x.producer_id == a.producer_id && x.last_offset == a.last_offset)
            {
                self.fail(format!("aborted transaction {a:?} is no longer reported"));
            }
        }
        present
    }

    fn run(&mut self, steps: usize) {
        self.sim.set_faults(Faults::default());
        self.storage.create_dir_all(&self.dir).unwrap();
        self.reopen();
        for _ in 0..steps {
            if self.log.is_none() {
                self.reopen();
            }
            self.now += 1 + self.rng.below(50) as i64;
            if self.rng.chance(0.03) {
                self.epoch += 1;
                self.trace.push(format!("leader epoch {}", self.epoch));
            }
            match self.rng.below(100) {
                0..=54 => self.append(),
                55..=62 => self.aborted_transaction(),
                63..=70 => {
                    self.flush("flush");
                }
                71..=76 => self.retention(),
                77..=80 => self.delete_records(),
                81..=89 => {
                    if self.compact {
                        self.compaction()
                    } else {
                        self.append()
                    }
                }
                _ => self.crash(),
            }
        }
        self.crash();
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

#[test]
fn fault_harness_keeps_every_acknowledged_record_through_faults_and_crashes() {
    let steps = env_u64("FJORD_FAULT_STEPS").map_or(DEFAULT_STEPS, |s| s as usize);
    let seeds: Vec<u64> = match env_u64("FJORD_FAULT_SEED") {
        Some(seed) => vec![seed],
        None => (0..env_u64("FJORD_FAULT_SEEDS").unwrap_or(DEFAULT_SEEDS)).collect(),
    };
    let mut totals = crate::sim::SimStats::default();
    let mut checks = 0;
    let mut durable = 0;
    for seed in &seeds {
        let mut h = Harness::new(*seed);
        // Any panic, the harness's own checks or one inside the log, names its seed.
        if let Err(panic) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| h.run(steps)))
        {
            eprintln!(
                "fault harness: seed {seed} panicked; replay: FJORD_FAULT_SEED={seed} cargo test -p fjord-log \
                 fault_harness -- --nocapture"
            );
            std::panic::resume_unwind(panic);
        }
        let s = h.sim.stats();
        totals.failed_writes += s.failed_writes;
        totals.torn_writes += s.torn_writes;
        totals.failed_fsyncs += s.failed_fsyncs;
        totals.failed_metadata += s.failed_metadata;
        totals.power_losses += s.power_losses;
        totals.process_crashes += s.process_crashes;
        checks += h.checks;
        durable += h.durable_end as u64;
    }
    println!(
        "fault harness: {} seeds x {steps} steps, {checks} recoveries checked, {durable} durable offsets; \
         injected {totals:?}",
        seeds.len()
    );
    assert!(checks >= seeds.len() as u64);
}
