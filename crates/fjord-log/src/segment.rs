//! One log segment: a `.log` file of record batches plus its two sparse indexes.
//!
//! A segment is named after its base offset. Only the last segment of a log (the active one) is appended to.
//! Positional reads and writes (`FileExt`) are used so that reading needs only `&self` and never moves a cursor.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::batch::{self, Header, HEADER_SIZE};
use crate::index::{OffsetEntry, OffsetIndex, TimeEntry, TimeIndex};
use crate::storage::{self as st, FileHandle, Open, Storage};
use crate::{Error, Result};

/// File name stem of a segment: the base offset zero-padded to 20 digits, as Kafka does.
pub(crate) fn file_stem(base_offset: i64) -> String {
    format!("{base_offset:020}")
}

pub(crate) fn log_path(dir: &Path, base_offset: i64) -> PathBuf {
    dir.join(format!("{}.log", file_stem(base_offset)))
}

pub(crate) fn index_path(dir: &Path, base_offset: i64) -> PathBuf {
    dir.join(format!("{}.index", file_stem(base_offset)))
}

pub(crate) fn time_index_path(dir: &Path, base_offset: i64) -> PathBuf {
    dir.join(format!("{}.timeindex", file_stem(base_offset)))
}

/// How much of a segment the opening scan has to look at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OpenMode {
    /// Clean shutdown: trust the indexes, read headers after the last index entry to find the end. A torn
    /// batch is damage (an error), never truncated.
    Trusted,
    /// Unclean shutdown, a segment wholly below the recovery point (known durable): verify CRCs of the batches
    /// after the last index entry; a torn or invalid batch is damage (an error), never truncated.
    VerifyTail,
    /// Unclean shutdown, a segment that may hold data not yet durable: verify every batch from the start,
    /// rebuild the indexes, and cut a torn tail.
    VerifyAll,
}

/// Result of the opening scan of a segment.
pub(crate) struct Opened {
    pub segment: Segment,
    /// True if a torn or corrupt tail was cut off.
    pub truncated: bool,
}

pub(crate) struct Segment {
    pub base_offset: i64,
    dir: PathBuf,
    storage: Arc<dyn Storage>,
    pub file: Arc<dyn FileHandle>,
    /// Bytes of complete batches in the file; the file is never longer except transiently during a failed write.
    pub size: u64,
    /// Last offset of the last batch + 1, or `base_offset` when empty.
    pub next_offset: i64,
    pub offset_index: OffsetIndex,
    pub time_index: TimeIndex,
    /// Bytes appended since the last offset index entry (Kafka's `bytesSinceLastIndexEntry`).
    bytes_since_index: u64,
    /// Largest batch `maxTimestamp` in the segment (-1 when empty or unknown).
    pub max_timestamp: i64,
    /// Base offset of the first batch carrying `max_timestamp`.
    pub offset_of_max_timestamp: i64,
    /// Wall-clock time of the first append into this segment (or of opening it); drives `segment.ms` rolls.
    pub created_ms: i64,
    /// Aborted transactions whose abort marker is in this segment (mirrors the `.txnindex` file).
    pub aborted: Vec<crate::AbortedTxn>,
    /// The `.txnindex` file was appended to since it was last fsynced.
    pub aborted_dirty: bool,
    /// (epoch, base offset) of each batch whose leader epoch differs from the batch before it, collected by the
    /// last scan at open (a whole-file scan when the segment was re-validated); taken by `Log::open_with` for
    /// the leader epoch cache.
    pub scanned_epochs: Vec<(i32, i64)>,
}

fn read_at(file: &Arc<dyn FileHandle>, buf: &mut [u8], pos: u64) -> std::io::Result<()> {
    file.read_exact_at(buf, pos)
}

impl Segment {
    /// Creates a new empty segment, replacing any stale files with the same base offset.
    pub fn create(
        storage: &Arc<dyn Storage>,
        dir: &Path,
        base_offset: i64,
        now_ms: i64,
    ) -> Result<Segment> {
        st::remove_if_exists(&**storage, &crate::txn_index::path(dir, base_offset))?;
        let file = storage.open(&log_path(dir, base_offset), Open::Truncate)?;
        Ok(Segment {
            base_offset,
            dir: dir.to_path_buf(),
            storage: Arc::clone(storage),
            file,
            size: 0,
            next_offset: base_offset,
            offset_index: OffsetIndex::create(
                storage,
                &index_path(dir, base_offset),
                base_offset,
                Vec::new(),
            )?,
            time_index: TimeIndex::create(
                storage,
                &time_index_path(dir, base_offset),
                base_offset,
                Vec::new(),
            )?,
            bytes_since_index: 0,
            max_timestamp: -1,
            offset_of_max_timestamp: -1,
            created_ms: now_ms,
            aborted: Vec::new(),
            aborted_dirty: false,
            scanned_epochs: Vec::new(),
        })
    }

    /// Opens an existing segment and scans it according to `mode`, cutting off a torn or corrupt tail and
    /// rebuilding the indexes when they are missing or inconsistent with the log file.
    pub fn open(
        storage: &Arc<dyn Storage>,
        dir: &Path,
        base_offset: i64,
        mode: OpenMode,
        index_interval: u64,
        now_ms: i64,
    ) -> Result<Opened> {
        let file = storage.open(&log_path(dir, base_offset), Open::Existing)?;
        let size = file.len()?;
        let offset_index =
            OffsetIndex::load(storage, &index_path(dir, base_offset), base_offset, size)?;
        let time_index = TimeIndex::load(storage, &time_index_path(dir, base_offset), base_offset)?;
        let (offset_index, time_index) = match (offset_index, time_index) {
            (Some(o), Some(t)) if mode != OpenMode::VerifyAll => (o, t),
            (o, t) => {
                if mode != OpenMode::VerifyAll && (o.is_none() || t.is_none()) {
                    tracing::warn!(base_offset, dir = %dir.display(), "index missing or inconsistent; rebuilding");
                }
                (
                    OffsetIndex::create(
                        storage,
                        &index_path(dir, base_offset),
                        base_offset,
                        Vec::new(),
                    )?,
                    TimeIndex::create(
                        storage,
                        &time_index_path(dir, base_offset),
                        base_offset,
                        Vec::new(),
                    )?,
                )
            }
        };
        let mut segment = Segment {
            base_offset,
            dir: dir.to_path_buf(),
            storage: Arc::clone(storage),
            file,
            size,
            next_offset: base_offset,
            offset_index,
            time_index,
            bytes_since_index: 0,
            max_timestamp: -1,
            offset_of_max_timestamp: -1,
            created_ms: now_ms,
            aborted: Vec::new(),
            aborted_dirty: false,
            scanned_epochs: Vec::new(),
        };
        let verify = mode != OpenMode::Trusted;
        let may_truncate = mode == OpenMode::VerifyAll;
        let truncated = match segment.scan_tail(verify, may_truncate, index_interval)? {
            Some(t) => t,
            None => {
                tracing::warn!(base_offset, dir = %dir.display(), "index does not match log; rebuilding");
                segment.reset_indexes()?;
                segment.size = segment.file.len()?;
                match segment.scan_tail(verify, may_truncate, index_interval)? {
                    Some(t) => t,
                    None => {
                        return Err(Error::CorruptMessage(format!(
                            "segment {base_offset} could not be rebuilt"
                        )))
                    }
                }
            }
        };
        let txn_path = crate::txn_index::path(dir, base_offset);
        let (aborted, torn) =
            crate::txn_index::load(&**storage, &txn_path, base_offset, segment.next_offset)?;
        segment.aborted = aborted;
        if truncated || torn {
            crate::txn_index::rewrite(&**storage, &txn_path, &segment.aborted)?;
        }
        Ok(Opened { segment, truncated })
    }

    /// Scans batches from the last offset index entry (or the start when there is none) to the end of the file,
    /// adding index entries as `append` would and truncating at the first torn or invalid batch.
    /// Returns `None` when the indexes turn out to disagree with the file (caller rebuilds from scratch),
    /// otherwise whether a tail was truncated. Without `may_truncate` (data known to be durable) a torn or
    /// invalid batch is an error: the segment is damaged, and cutting it would discard acknowledged records.
    fn scan_tail(
        &mut self,
        verify: bool,
        may_truncate: bool,
        index_interval: u64,
    ) -> Result<Option<bool>> {
        let file_len = self.size;
        let last_entry = self.offset_index.entries.last().copied();
        let mut pos = last_entry.map_or(0, |e| u64::from(e.position));
        let mut expected_min = self.base_offset;
        // The summary is derived from scratch: the time index covers everything before the last offset index
        // entry, the scan below covers the rest.
        self.max_timestamp = -1;
        self.offset_of_max_timestamp = -1;
        if let Some(t) = self.time_index.entries.last() {
            self.max_timestamp = t.timestamp;
            self.offset_of_max_timestamp = t.offset;
        }
        let mut next_offset = self.base_offset;
        let mut bytes_since_index = 0u64;
        let mut first = true;
        let mut header_buf = [0u8; HEADER_SIZE];
        let mut body = Vec::new();
        let mut torn = false;
        self.scanned_epochs.clear();
        while pos < file_len {
            if file_len - pos < HEADER_SIZE as u64 {
                torn = true;
                break;
            }
            read_at(&self.file, &mut header_buf, pos)?;
            let Some(header) = Header::parse(&header_buf) else {
                torn = true;
                break;
            };
            let size = header.size() as u64;
            if header.magic != 2
                || header.batch_length < batch::MIN_BATCH_LENGTH as i32
                || pos + size > file_len
                || header.base_offset < expected_min
                || header.last_offset_delta < header.record_count - 1
                || header.record_count < 1
                || header.last_offset() - self.base_offset > i64::from(i32::MAX)
            {
                if first && last_entry.is_some() {
                    return Ok(None);
                }
                torn = true;
                break;
            }
            if verify {
                body.resize(size as usize, 0);
                read_at(&self.file, &mut body, pos)?;
                if let Err(e) = batch::check_stored(&body) {
                    if first && last_entry.is_some() {
                        return Ok(None);
                    }
                    tracing::warn!(base_offset = self.base_offset, pos, error = %e, "invalid batch during recovery");
                    torn = true;
                    break;
                }
            }
            match last_entry {
                Some(e) if first => {
                    if header.last_offset() != e.offset {
                        return Ok(None);
                    }
                    // Append created this entry for this very batch and then started counting with its bytes.
                    bytes_since_index = size;
                }
                _ => self.index_batch(&header, pos, index_interval, &mut bytes_since_index)?,
            }
            self.observe_timestamp(&header);
            if self.scanned_epochs.last().map(|e| e.0) != Some(header.partition_leader_epoch) {
                self.scanned_epochs
                    .push((header.partition_leader_epoch, header.base_offset));
            }
            first = false;
            expected_min = header.last_offset() + 1;
            next_offset = header.last_offset() + 1;
            pos += size;
        }
        if let Some(t) = self.time_index.entries.last() {
            if t.offset >= next_offset {
                return Ok(None);
            }
        }
        if first && last_entry.is_some() {
            // An index entry pointing at nothing means the index disagrees with the file.
            return Ok(None);
        }
        if torn && !may_truncate {
            return Err(Error::Damaged(format!(
                "segment {} of {} is damaged at byte {pos} of {file_len}, inside data that was already made \
                 durable (below the recovery point or after a clean shutdown); it is not truncated, since \
                 that would discard acknowledged records. Restore the file from a replica or backup, or move \
                 the partition directory aside to give up its data",
                self.base_offset,
                self.dir.display()
            )));
        }
        self.bytes_since_index = bytes_since_index;
        self.next_offset = next_offset;
        if torn {
            tracing::warn!(
                base_offset = self.base_offset,
                valid_bytes = pos,
                file_bytes = file_len,
                "truncating torn or corrupt segment tail"
            );
            // Only the in-memory view is cut here; the file keeps its bytes until the caller cuts it with
            // `cut_file`, after it has durably dealt with what depends on them (see `Log::open_with`).
            self.size = pos;
            self.offset_index.truncate_to_position(pos)?;
        }
        Ok(Some(torn))
    }

    /// (epoch, base offset) of each batch whose leader epoch differs from the batch before it, from a walk over
    /// the batch headers of the whole file (rebuilding a lost leader epoch checkpoint). Headers only: the data
    /// was validated when the segment was opened.
    pub fn epoch_transitions(&self) -> Result<Vec<(i32, i64)>> {
        let mut out: Vec<(i32, i64)> = Vec::new();
        let mut header_buf = [0u8; HEADER_SIZE];
        let mut pos = 0u64;
        while pos + HEADER_SIZE as u64 <= self.size {
            read_at(&self.file, &mut header_buf, pos)?;
            let Some(header) = Header::parse(&header_buf) else {
                break;
            };
            if out.last().map(|e| e.0) != Some(header.partition_leader_epoch) {
                out.push((header.partition_leader_epoch, header.base_offset));
            }
            let size = header.size() as u64;
            if size == 0 {
                break;
            }
            pos += size;
        }
        Ok(out)
    }

    /// Adds index entries for a batch at `pos` following Kafka's rule: an entry whenever more than
    /// `index.interval.bytes` were appended since the previous entry.
    fn index_batch(
        &mut self,
        header: &Header,
        pos: u64,
        index_interval: u64,
        since: &mut u64,
    ) -> Result<()> {
        if *since > index_interval {
            self.offset_index.append(OffsetEntry {
                offset: header.last_offset(),
                position: pos as u32,
            })?;
            let (ts, off) = if header.max_timestamp > self.max_timestamp {
                (header.max_timestamp, header.base_offset)
            } else {
                (self.max_timestamp, self.offset_of_max_timestamp)
            };
            if ts >= 0 {
                self.time_index.maybe_append(TimeEntry {
                    timestamp: ts,
                    offset: off,
                })?;
            }
            *since = 0;
        }
        *since += header.size() as u64;
        Ok(())
    }

    fn observe_timestamp(&mut self, header: &Header) {
        if header.max_timestamp > self.max_timestamp {
            self.max_timestamp = header.max_timestamp;
            self.offset_of_max_timestamp = header.base_offset;
        }
    }

    /// Cuts the file to the segment's size, after a scan found a torn or invalid tail.
    pub fn cut_file(&self) -> Result<()> {
        self.file.set_len(self.size)?;
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.size == 0
    }

    /// Appends already-validated batches (`buf` holds them back to back, `headers` their positions in `buf` and
    /// their final headers). Writes once, then updates the in-memory state and indexes.
    pub fn append(
        &mut self,
        buf: &[u8],
        headers: &[(usize, Header)],
        index_interval: u64,
        now_ms: i64,
    ) -> Result<()> {
        let start = self.size;
        if let Err(e) = self.file.write_all_at(buf, start) {
            // Leave no partial batch behind so the next append lands on a batch boundary.
            let _ = self.file.set_len(start);
            return Err(e.into());
        }
        if self.size == 0 {
            self.created_ms = now_ms;
        }
        self.size += buf.len() as u64;
        let mut since = self.bytes_since_index;
        for (pos, header) in headers {
            debug_assert!(header.base_offset >= self.next_offset, "offsets must grow");
            if let Err(e) =
                self.index_batch(header, start + *pos as u64, index_interval, &mut since)
            {
                // The data must not stay beyond `next_offset`: cut it again (best effort; the log is taken
                // offline by the caller either way, and recovery re-validates the file).
                self.size = start;
                let _ = self.file.set_len(start);
                let _ = self.offset_index.truncate_to_position(start);
                return Err(e);
            }
            self.observe_timestamp(header);
            self.next_offset = header.last_offset() + 1;
        }
        self.bytes_since_index = since;
        Ok(())
    }

    /// Called when the segment stops being the active one: records its final max timestamp in the time index
    /// so a later open finds it without scanning.
    pub fn on_become_inactive(&mut self) -> Result<()> {
        if self.max_timestamp >= 0 {
            self.time_index.maybe_append(TimeEntry {
                timestamp: self.max_timestamp,
                offset: self.offset_of_max_timestamp,
            })?;
        }
        Ok(())
    }

    /// Reads the header of the batch at `pos`.
    pub fn read_header(&self, pos: u64) -> Result<Header> {
        if pos + HEADER_SIZE as u64 > self.size {
            return Err(Error::CorruptMessage(format!(
                "segment {} has no batch header at {pos}",
                self.base_offset
            )));
        }
        let mut buf = [0u8; HEADER_SIZE];
        read_at(&self.file, &mut buf, pos)?;
        Header::parse(&buf).ok_or_else(|| Error::CorruptMessage("short header".into()))
    }

    /// Reads `len` bytes at `pos` into `out` (appending).
    pub fn read_into(&self, out: &mut Vec<u8>, pos: u64, len: usize) -> Result<()> {
        let start = out.len();
        out.resize(start + len, 0);
        read_at(&self.file, &mut out[start..], pos)?;
        Ok(())
    }

    /// Position of the first batch whose last offset is >= `offset`, or `None` if the segment has none.
    pub fn find_position(&self, offset: i64) -> Result<Option<(u64, Header)>> {
        let mut pos = if offset <= self.base_offset {
            0
        } else {
            self.offset_index.lookup(offset)
        };
        while pos < self.size {
            let header = self.read_header(pos)?;
            if header.last_offset() >= offset {
                return Ok(Some((pos, header)));
            }
            pos += header.size() as u64;
        }
        Ok(None)
    }

    /// Removes every batch whose last offset is >= `offset`. Returns the base offset of the first removed batch.
    pub fn truncate_to(&mut self, offset: i64, index_interval: u64) -> Result<Option<i64>> {
        let Some((pos, header)) = self.find_position(offset)? else {
            return Ok(None);
        };
        self.file.set_len(pos)?;
        self.size = pos;
        let cut = header.base_offset;
        if self.aborted.iter().any(|a| a.last_offset >= cut) {
            self.aborted.retain(|a| a.last_offset < cut);
            crate::txn_index::rewrite(
                &*self.storage,
                &crate::txn_index::path(&self.dir, self.base_offset),
                &self.aborted,
            )?;
        }
        // Truncation is rare (follower divergence), so rebuilding both indexes and the timestamp summary from a
        // scan keeps this simple and obviously consistent.
        self.reset_indexes()?;
        self.next_offset = self.base_offset;
        match self.scan_tail(false, true, index_interval)? {
            Some(torn) => {
                if torn {
                    self.cut_file()?;
                }
                Ok(Some(header.base_offset))
            }
            None => Err(Error::CorruptMessage(format!(
                "segment {} inconsistent after truncation",
                self.base_offset
            ))),
        }
    }

    /// Empties both indexes and the timestamp summary, ready for a rebuilding scan.
    fn reset_indexes(&mut self) -> Result<()> {
        self.offset_index = OffsetIndex::create(
            &self.storage,
            &index_path(&self.dir, self.base_offset),
            self.base_offset,
            Vec::new(),
        )?;
        self.time_index = TimeIndex::create(
            &self.storage,
            &time_index_path(&self.dir, self.base_offset),
            self.base_offset,
            Vec::new(),
        )?;
        self.max_timestamp = -1;
        self.offset_of_max_timestamp = -1;
        Ok(())
    }

    /// Rebuilds indexes and summary after the log file was replaced (compaction).
    pub fn reload(&mut self, index_interval: u64) -> Result<()> {
        let file = self
            .storage
            .open(&log_path(&self.dir, self.base_offset), Open::Existing)?;
        self.size = file.len()?;
        self.file = file;
        self.reset_indexes()?;
        self.next_offset = self.base_offset;
        match self.scan_tail(false, true, index_interval)? {
            Some(false) => {
                self.on_become_inactive()?;
                Ok(())
            }
            _ => Err(Error::CorruptMessage(format!(
                "cleaned segment {} failed validation",
                self.base_offset
            ))),
        }
    }

    /// Largest timestamp for retention: the max batch timestamp, or the file's modification time when no batch
    /// carries a timestamp (old clients send -1), as Kafka does.
    pub fn largest_timestamp(&self) -> i64 {
        if self.max_timestamp >= 0 {
            return self.max_timestamp;
        }
        self.file.modified_ms().unwrap_or(-1)
    }

    /// Test oracle: walks the file batch by batch (CRC included) and checks that it ends at `size` and
    /// `next_offset`, that every offset index entry names a batch start and that batch's last offset, that the
    /// time index grows, and that `find_position` agrees with the walk.
    #[cfg(test)]
    pub(crate) fn check_consistency(&self) -> std::result::Result<(), String> {
        let mut pos = 0u64;
        let mut batches = Vec::new();
        let mut next = self.base_offset;
        while pos < self.size {
            let mut buf = Vec::new();
            let h = self.read_header(pos).map_err(|e| e.to_string())?;
            self.read_into(&mut buf, pos, h.size())
                .map_err(|e| e.to_string())?;
            let h = batch::check_stored(&buf).map_err(|e| format!("batch at {pos}: {e}"))?;
            if h.base_offset < next {
                return Err(format!(
                    "batch at {pos} starts at {} below {next}",
                    h.base_offset
                ));
            }
            batches.push((pos, h));
            next = h.last_offset() + 1;
            pos += h.size() as u64;
        }
        if pos != self.size {
            return Err(format!("batches end at {pos}, size says {}", self.size));
        }
        if !batches.is_empty() && next != self.next_offset {
            return Err(format!(
                "batches end at offset {next}, next_offset says {}",
                self.next_offset
            ));
        }
        for e in &self.offset_index.entries {
            match batches.iter().find(|(p, _)| u64::from(e.position) == *p) {
                Some((_, h)) if h.last_offset() == e.offset => {}
                _ => {
                    return Err(format!(
                        "segment {}: index entry {e:?} names no batch",
                        self.base_offset
                    ))
                }
            }
        }
        if self
            .time_index
            .entries
            .windows(2)
            .any(|w| w[0].timestamp >= w[1].timestamp || w[0].offset > w[1].offset)
        {
            return Err(format!(
                "segment {}: time index does not grow",
                self.base_offset
            ));
        }
        for (p, h) in &batches {
            for o in [h.base_offset, h.last_offset()] {
                match self.find_position(o).map_err(|e| e.to_string())? {
                    Some((found, _)) if found == *p => {}
                    other => {
                        return Err(format!(
                            "segment {}: offset {o} found at {other:?}, the batch is at {p}",
                            self.base_offset
                        ))
                    }
                }
            }
        }
        Ok(())
    }

    /// Writes the segment's bytes back over themselves and fsyncs them, for recovery: data that a crashed process
    /// left in the page cache may never reach the disk if a write-back of it failed (the kernel marks such pages
    /// clean: "fsyncgate"), yet it reads back fine, and a plain fsync would report success. Writing it again makes
    /// it dirty, so the fsync really persists what recovery validated.
    pub fn rewrite_and_sync(&mut self) -> Result<()> {
        const CHUNK: u64 = 1 << 20;
        let mut buf = Vec::new();
        let mut pos = 0;
        while pos < self.size {
            let len = CHUNK.min(self.size - pos) as usize;
            buf.clear();
            self.read_into(&mut buf, pos, len)?;
            self.file.write_all_at(&buf, pos)?;
            pos += len as u64;
        }
        self.file.sync_data()?;
        self.sync_indexes()
    }

    pub fn sync_indexes(&mut self) -> Result<()> {
        self.offset_index.sync()?;
        self.time_index.sync()?;
        Ok(())
    }

    /// Deletes the segment's files. Open handles (e.g. in a pending FlushHandle) stay valid on Unix.
    pub fn delete_files(&self) -> Result<()> {
        for path in [
            log_path(&self.dir, self.base_offset),
            self.offset_index.path().to_path_buf(),
            self.time_index.path().to_path_buf(),
            crate::txn_index::path(&self.dir, self.base_offset),
        ] {
            st::remove_if_exists(&*self.storage, &path)?;
        }
        Ok(())
    }
}
