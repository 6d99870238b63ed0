//! Sparse offset index (`.index`) and time index (`.timeindex`) of one segment.
//!
//! The workspace forbids `unsafe`, so there is no mmap: entries live in a `Vec` and are appended to the file as
//! they are created. The files use Kafka's layout (offset index: i32 BE relative offset, i32 BE position; time
//! index: i64 BE timestamp, i32 BE relative offset) so that they survive restarts and Kafka's tools can read them.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::storage::{self as st, FileHandle, Open, Storage};

/// Size of one offset index entry on disk.
pub(crate) const OFFSET_ENTRY_SIZE: usize = 8;
/// Size of one time index entry on disk.
pub(crate) const TIME_ENTRY_SIZE: usize = 12;

/// Offset index entry: the last offset of the batch that starts at `position`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct OffsetEntry {
    pub offset: i64,
    pub position: u32,
}

/// Time index entry: the largest timestamp seen so far in the segment and the offset of the batch holding it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TimeEntry {
    pub timestamp: i64,
    pub offset: i64,
}

/// Replaces `path` with `bytes` (temporary file + rename) so a crash leaves either the old or the new index,
/// never a half-written one. Not fsynced: an index is rebuilt from its
/// segment whenever it looks wrong, and the flush that makes a rolled segment durable syncs its indexes too.
fn rewrite(storage: &Arc<dyn Storage>, path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension(format!(
        "{}.tmp",
        path.extension().and_then(|e| e.to_str()).unwrap_or("")
    ));
    {
        let f = storage.open(&tmp, Open::Truncate)?;
        f.write_all_at(bytes, 0)?;
    }
    storage.rename(&tmp, path)
}

/// An index file's handle, opened only when the index is written or synced and released once its segment is
/// durable and inactive: idle partitions then hold one open file (the segment) instead of three, which is what
/// lets a broker host tens of thousands of partitions under an ordinary open-file limit.
struct LazyFile {
    storage: Arc<dyn Storage>,
    path: PathBuf,
    file: Option<Arc<dyn FileHandle>>,
}

impl LazyFile {
    fn new(storage: &Arc<dyn Storage>, path: &Path, file: Option<Arc<dyn FileHandle>>) -> LazyFile {
        LazyFile {
            storage: Arc::clone(storage),
            path: path.to_path_buf(),
            file,
        }
    }

    fn get(&mut self) -> io::Result<&Arc<dyn FileHandle>> {
        if self.file.is_none() {
            self.file = Some(self.storage.open(&self.path, Open::Create)?);
        }
        Ok(self.file.as_ref().expect("just opened"))
    }
}

/// The offset index of one segment.
pub(crate) struct OffsetIndex {
    path: PathBuf,
    base_offset: i64,
    file: LazyFile,
    pub entries: Vec<OffsetEntry>,
}

impl OffsetIndex {
    /// Loads the index at `path`. Returns `Ok(None)` when the file is missing or inconsistent (size not a multiple
    /// of the entry size, offsets or positions not increasing, positions beyond `log_size`), so the caller rebuilds.
    pub fn load(
        storage: &Arc<dyn Storage>,
        path: &Path,
        base_offset: i64,
        log_size: u64,
    ) -> io::Result<Option<OffsetIndex>> {
        let Some(bytes) = st::read_optional(&**storage, path)? else {
            return Ok(None);
        };
        if bytes.len() % OFFSET_ENTRY_SIZE != 0 {
            return Ok(None);
        }
        let mut entries = Vec::with_capacity(bytes.len() / OFFSET_ENTRY_SIZE);
        for chunk in bytes.chunks_exact(OFFSET_ENTRY_SIZE) {
            let rel = i32::from_be_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
            let pos = i32::from_be_bytes([chunk[4], chunk[5], chunk[6], chunk[7]]);
            if rel < 0 || pos < 0 || pos as u64 >= log_size.max(1) {
                return Ok(None);
            }
            let entry = OffsetEntry {
                offset: base_offset + i64::from(rel),
                position: pos as u32,
            };
            if let Some(prev) = entries.last() {
                let prev: &OffsetEntry = prev;
                if entry.offset <= prev.offset || entry.position <= prev.position {
                    return Ok(None);
                }
            }
            entries.push(entry);
        }
        Ok(Some(OffsetIndex {
            path: path.to_path_buf(),
            base_offset,
            file: LazyFile::new(storage, path, None),
            entries,
        }))
    }

    /// Writes `entries` as the whole index, replacing whatever file was there.
    pub fn create(
        storage: &Arc<dyn Storage>,
        path: &Path,
        base_offset: i64,
        entries: Vec<OffsetEntry>,
    ) -> io::Result<OffsetIndex> {
        let mut bytes = Vec::with_capacity(entries.len() * OFFSET_ENTRY_SIZE);
        for e in &entries {
            encode_offset_entry(&mut bytes, base_offset, e);
        }
        rewrite(storage, path, &bytes)?;
        let file = LazyFile::new(storage, path, None);
        Ok(OffsetIndex {
            path: path.to_path_buf(),
            base_offset,
            file,
            entries,
        })
    }

    pub fn append(&mut self, entry: OffsetEntry) -> io::Result<()> {
        if let Some(last) = self.entries.last() {
            debug_assert!(entry.offset > last.offset && entry.position > last.position);
        }
        let mut bytes = Vec::with_capacity(OFFSET_ENTRY_SIZE);
        encode_offset_entry(&mut bytes, self.base_offset, &entry);
        let at = self.size_bytes();
        self.file.get()?.write_all_at(&bytes, at)?;
        self.entries.push(entry);
        Ok(())
    }

    /// Position to start scanning from to find `offset`: the entry with the largest offset <= `offset`.
    pub fn lookup(&self, offset: i64) -> u64 {
        let i = self.entries.partition_point(|e| e.offset <= offset);
        if i == 0 {
            0
        } else {
            u64::from(self.entries[i - 1].position)
        }
    }

    /// Drops entries at or beyond byte `position` (after a truncation of the log file).
    pub fn truncate_to_position(&mut self, position: u64) -> io::Result<()> {
        let keep = self
            .entries
            .partition_point(|e| u64::from(e.position) < position);
        if keep < self.entries.len() {
            self.entries.truncate(keep);
            self.file
                .get()?
                .set_len((keep * OFFSET_ENTRY_SIZE) as u64)?;
        }
        Ok(())
    }

    pub fn size_bytes(&self) -> u64 {
        (self.entries.len() * OFFSET_ENTRY_SIZE) as u64
    }

    pub fn sync(&mut self) -> io::Result<()> {
        self.file.get()?.sync_all()
    }

    /// The open handle (opened if needed), for a flush that syncs the index with its segment.
    pub fn file(&mut self) -> io::Result<Arc<dyn FileHandle>> {
        self.file.get().map(Arc::clone)
    }

    /// Closes the handle until the index is written again.
    pub fn release(&mut self) {
        self.file.file = None;
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn encode_offset_entry(out: &mut Vec<u8>, base_offset: i64, e: &OffsetEntry) {
    let rel = (e.offset - base_offset) as i32;
    out.extend_from_slice(&rel.to_be_bytes());
    out.extend_from_slice(&(e.position as i32).to_be_bytes());
}

fn encode_time_entry(out: &mut Vec<u8>, base_offset: i64, e: &TimeEntry) {
    out.extend_from_slice(&e.timestamp.to_be_bytes());
    out.extend_from_slice(&((e.offset - base_offset) as i32).to_be_bytes());
}

/// The time index of one segment. Entries have strictly increasing timestamps and non-decreasing offsets.
pub(crate) struct TimeIndex {
    path: PathBuf,
    base_offset: i64,
    file: LazyFile,
    pub entries: Vec<TimeEntry>,
}

impl TimeIndex {
    /// Loads the time index; `Ok(None)` when missing or inconsistent.
    pub fn load(
        storage: &Arc<dyn Storage>,
        path: &Path,
        base_offset: i64,
    ) -> io::Result<Option<TimeIndex>> {
        let Some(bytes) = st::read_optional(&**storage, path)? else {
            return Ok(None);
        };
        if bytes.len() % TIME_ENTRY_SIZE != 0 {
            return Ok(None);
        }
        let mut entries: Vec<TimeEntry> = Vec::with_capacity(bytes.len() / TIME_ENTRY_SIZE);
        for chunk in bytes.chunks_exact(TIME_ENTRY_SIZE) {
            let mut ts = [0u8; 8];
            ts.copy_from_slice(&chunk[..8]);
            let rel = i32::from_be_bytes([chunk[8], chunk[9], chunk[10], chunk[11]]);
            if rel < 0 {
                return Ok(None);
            }
            let entry = TimeEntry {
                timestamp: i64::from_be_bytes(ts),
                offset: base_offset + i64::from(rel),
            };
            if let Some(prev) = entries.last() {
                if entry.timestamp <= prev.timestamp || entry.offset < prev.offset {
                    return Ok(None);
                }
            }
            entries.push(entry);
        }
        Ok(Some(TimeIndex {
            path: path.to_path_buf(),
            base_offset,
            file: LazyFile::new(storage, path, None),
            entries,
        }))
    }

    pub fn create(
        storage: &Arc<dyn Storage>,
        path: &Path,
        base_offset: i64,
        entries: Vec<TimeEntry>,
    ) -> io::Result<TimeIndex> {
        let mut bytes = Vec::with_capacity(entries.len() * TIME_ENTRY_SIZE);
        for e in &entries {
            encode_time_entry(&mut bytes, base_offset, e);
        }
        rewrite(storage, path, &bytes)?;
        let file = LazyFile::new(storage, path, None);
        Ok(TimeIndex {
            path: path.to_path_buf(),
            base_offset,
            file,
            entries,
        })
    }

    /// Appends an entry only if its timestamp is larger than the last one, like Kafka's `maybeAppend`.
    pub fn maybe_append(&mut self, entry: TimeEntry) -> io::Result<()> {
        if let Some(last) = self.entries.last() {
            if entry.timestamp <= last.timestamp {
                return Ok(());
            }
            debug_assert!(entry.offset >= last.offset);
        }
        let mut bytes = Vec::with_capacity(TIME_ENTRY_SIZE);
        encode_time_entry(&mut bytes, self.base_offset, &entry);
        let at = self.size_bytes();
        self.file.get()?.write_all_at(&bytes, at)?;
        self.entries.push(entry);
        Ok(())
    }

    /// The offset after which records with timestamp >= `ts` may appear: the offset of the last entry whose
    /// timestamp is below `ts` (every record up to that entry's batch is older than `ts`).
    pub fn lookup_below(&self, ts: i64) -> Option<i64> {
        let i = self.entries.partition_point(|e| e.timestamp < ts);
        if i == 0 {
            None
        } else {
            Some(self.entries[i - 1].offset)
        }
    }

    pub fn size_bytes(&self) -> u64 {
        (self.entries.len() * TIME_ENTRY_SIZE) as u64
    }

    pub fn sync(&mut self) -> io::Result<()> {
        self.file.get()?.sync_all()
    }

    /// The open handle (opened if needed), for a flush that syncs the index with its segment.
    pub fn file(&mut self) -> io::Result<Arc<dyn FileHandle>> {
        self.file.get().map(Arc::clone)
    }

    /// Closes the handle until the index is written again.
    pub fn release(&mut self) {
        self.file.file = None;
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk() -> Arc<dyn Storage> {
        Arc::new(crate::storage::Disk)
    }

    #[test]
    fn offset_index_round_trips_through_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("00000000000000000100.index");
        let mut idx = OffsetIndex::create(&disk(), &path, 100, Vec::new()).unwrap();
        idx.append(OffsetEntry {
            offset: 110,
            position: 4000,
        })
        .unwrap();
        idx.append(OffsetEntry {
            offset: 130,
            position: 9000,
        })
        .unwrap();
        drop(idx);
        let idx = OffsetIndex::load(&disk(), &path, 100, 10_000)
            .unwrap()
            .unwrap();
        assert_eq!(idx.entries.len(), 2);
        assert_eq!(idx.lookup(105), 0);
        assert_eq!(idx.lookup(110), 4000);
        assert_eq!(idx.lookup(129), 4000);
        assert_eq!(idx.lookup(500), 9000);
    }

    #[test]
    fn offset_index_with_positions_beyond_log_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.index");
        let mut idx = OffsetIndex::create(&disk(), &path, 0, Vec::new()).unwrap();
        idx.append(OffsetEntry {
            offset: 5,
            position: 4000,
        })
        .unwrap();
        drop(idx);
        assert!(OffsetIndex::load(&disk(), &path, 0, 1000)
            .unwrap()
            .is_none());
        std::fs::write(&path, [0u8; 7]).unwrap();
        assert!(OffsetIndex::load(&disk(), &path, 0, 1000)
            .unwrap()
            .is_none());
    }

    #[test]
    fn time_index_keeps_only_increasing_timestamps() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.timeindex");
        let mut idx = TimeIndex::create(&disk(), &path, 0, Vec::new()).unwrap();
        idx.maybe_append(TimeEntry {
            timestamp: 10,
            offset: 1,
        })
        .unwrap();
        idx.maybe_append(TimeEntry {
            timestamp: 10,
            offset: 2,
        })
        .unwrap();
        idx.maybe_append(TimeEntry {
            timestamp: 20,
            offset: 5,
        })
        .unwrap();
        drop(idx);
        let idx = TimeIndex::load(&disk(), &path, 0).unwrap().unwrap();
        assert_eq!(idx.entries.len(), 2);
        assert_eq!(idx.lookup_below(10), None);
        assert_eq!(idx.lookup_below(15), Some(1));
        assert_eq!(idx.lookup_below(25), Some(5));
    }
}
