//! The aborted-transaction index of a segment (`<base offset>.txnindex`), in Kafka's layout: 34-byte entries
//! `(version: int16 = 0, producer_id: int64, first_offset: int64, last_offset: int64, last_stable_offset: int64)`.
//! An entry lives in the segment holding its abort marker (`last_offset`), so it is deleted with that segment.
//!
//! The log keeps every segment's entries in memory too (they are few: one per aborted transaction) and answers
//! "which aborted transactions overlap this fetch" from them. The broker owns their content: it adds an entry
//! when it writes an abort marker and, on open, re-adds those after its producer-state snapshot (the file may
//! have missed an entry written just before a crash).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// One aborted transaction: its records lie in `first_offset..last_offset`; the abort marker is at
/// `last_offset`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AbortedTxn {
    pub producer_id: i64,
    pub first_offset: i64,
    pub last_offset: i64,
    /// The last stable offset right after the abort (Kafka keeps it to bound fetch-time scans).
    pub last_stable_offset: i64,
}

const ENTRY_SIZE: usize = 34;

pub(crate) fn path(dir: &Path, base_offset: i64) -> PathBuf {
    dir.join(format!(
        "{}.txnindex",
        crate::segment::file_stem(base_offset)
    ))
}

fn encode(e: &AbortedTxn) -> [u8; ENTRY_SIZE] {
    let mut b = [0u8; ENTRY_SIZE];
    b[2..10].copy_from_slice(&e.producer_id.to_be_bytes());
    b[10..18].copy_from_slice(&e.first_offset.to_be_bytes());
    b[18..26].copy_from_slice(&e.last_offset.to_be_bytes());
    b[26..34].copy_from_slice(&e.last_stable_offset.to_be_bytes());
    b
}

fn i64_at(b: &[u8], pos: usize) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[pos..pos + 8]);
    i64::from_be_bytes(a)
}

/// Reads a segment's entries, keeping those whose marker is below `end_offset` (the segment's end after
/// recovery). A missing file means no entries; a torn last entry is ignored.
pub(crate) fn load(path: &Path, end_offset: i64) -> io::Result<Vec<AbortedTxn>> {
    let data = match fs::read(path) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    Ok(data
        .chunks_exact(ENTRY_SIZE)
        .filter(|c| c[0] == 0 && c[1] == 0)
        .map(|c| AbortedTxn {
            producer_id: i64_at(c, 2),
            first_offset: i64_at(c, 10),
            last_offset: i64_at(c, 18),
            last_stable_offset: i64_at(c, 26),
        })
        .filter(|e| e.last_offset < end_offset)
        .collect())
}

pub(crate) fn append(path: &Path, e: &AbortedTxn) -> io::Result<()> {
    let mut f = OpenOptions::new().create(true).append(true).open(path)?;
    f.write_all(&encode(e))
}

/// Replaces the file with exactly `entries` (after truncation); no file when there are none.
pub(crate) fn rewrite(path: &Path, entries: &[AbortedTxn]) -> io::Result<()> {
    if entries.is_empty() {
        return match fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        };
    }
    let tmp = path.with_extension("txnindex.tmp");
    {
        let mut f = File::create(&tmp)?;
        for e in entries {
            f.write_all(&encode(e))?;
        }
        f.sync_all()?;
    }
    fs::rename(&tmp, path)
}

pub(crate) fn sync(path: &Path) -> io::Result<()> {
    match File::open(path) {
        Ok(f) => f.sync_all(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

pub(crate) fn remove(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}
