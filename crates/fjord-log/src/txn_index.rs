//! The aborted-transaction index of a segment (`<base offset>.txnindex`), in Kafka's layout: 34-byte entries
//! `(version: int16 = 0, producer_id: int64, first_offset: int64, last_offset: int64, last_stable_offset: int64)`.
//! An entry lives in the segment holding its abort marker (`last_offset`), so it is deleted with that segment.
//!
//! The log keeps every segment's entries in memory too (they are few: one per aborted transaction) and answers
//! "which aborted transactions overlap this fetch" from them. The broker owns their content: it adds an entry
//! when it writes an abort marker and, on open, re-adds those after its producer-state snapshot (the file may
//! have missed an entry written just before a crash).

use std::io;
use std::path::{Path, PathBuf};

use crate::storage::{self as st, Open, Storage};

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
pub(crate) fn load(
    storage: &dyn Storage,
    path: &Path,
    end_offset: i64,
) -> io::Result<Vec<AbortedTxn>> {
    let Some(data) = st::read_optional(storage, path)? else {
        return Ok(Vec::new());
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

pub(crate) fn append(storage: &dyn Storage, path: &Path, e: &AbortedTxn) -> io::Result<()> {
    let f = storage.open(path, Open::Create)?;
    // Whole entries only: a torn entry left by an earlier crash is overwritten.
    let len = f.len()? / ENTRY_SIZE as u64 * ENTRY_SIZE as u64;
    f.write_all_at(&encode(e), len)
}

/// Replaces the file with exactly `entries` (after truncation); no file when there are none.
pub(crate) fn rewrite(
    storage: &dyn Storage,
    path: &Path,
    entries: &[AbortedTxn],
) -> io::Result<()> {
    if entries.is_empty() {
        return st::remove_if_exists(storage, path);
    }
    let mut bytes = Vec::with_capacity(entries.len() * ENTRY_SIZE);
    for e in entries {
        bytes.extend_from_slice(&encode(e));
    }
    st::write_atomic(storage, path, &bytes)
}

pub(crate) fn sync(storage: &dyn Storage, path: &Path) -> io::Result<()> {
    match storage.open(path, Open::Existing) {
        Ok(f) => f.sync_all(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}
