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

/// Reads the entries of the segment starting at `base_offset`, keeping those whose marker is below
/// `end_offset` (the segment's end after recovery). A missing file means no entries. The second value is `true`
/// when the file held more than the entries returned, so the caller rewrites it: an append must never land
/// behind garbage that the next load would stop at.
///
/// Entries are appended in marker order, so a well-formed file is a run of plausible entries (version 0, a
/// producer id, a transaction that starts before its marker, markers in this segment and increasing). The
/// first entry that is not is the start of a torn tail: a power loss after the file grew but before its data
/// reached the disk leaves zeros there (found by the broker's fault harness: a zeroed entry was reported as an
/// aborted transaction of producer 0), and everything from it on is dropped. Entries that were fsynced are
/// never behind such a tail, since nothing is appended to a file before what it already holds is whole.
pub(crate) fn load(
    storage: &dyn Storage,
    path: &Path,
    base_offset: i64,
    end_offset: i64,
) -> io::Result<(Vec<AbortedTxn>, bool)> {
    let Some(data) = st::read_optional(storage, path)? else {
        return Ok((Vec::new(), false));
    };
    let mut out = Vec::with_capacity(data.len() / ENTRY_SIZE);
    let mut prev_last = base_offset - 1;
    let mut whole = data.len() % ENTRY_SIZE == 0;
    for c in data.chunks_exact(ENTRY_SIZE) {
        let e = AbortedTxn {
            producer_id: i64_at(c, 2),
            first_offset: i64_at(c, 10),
            last_offset: i64_at(c, 18),
            last_stable_offset: i64_at(c, 26),
        };
        let plausible = c[0] == 0
            && c[1] == 0
            && e.producer_id >= 0
            && 0 <= e.first_offset
            && e.first_offset < e.last_offset
            && e.last_offset > prev_last
            && e.last_stable_offset <= e.last_offset + 1;
        if !plausible || e.last_offset >= end_offset {
            whole = false;
            break;
        }
        prev_last = e.last_offset;
        out.push(e);
    }
    Ok((out, !whole))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::SimStorage;

    fn entry(pid: i64, first: i64, last: i64) -> AbortedTxn {
        AbortedTxn {
            producer_id: pid,
            first_offset: first,
            last_offset: last,
            last_stable_offset: last + 1,
        }
    }

    #[test]
    fn a_zeroed_or_torn_tail_is_dropped_and_reported_for_rewriting() {
        let fs = SimStorage::new(1);
        let dir = Path::new("/d");
        fs.create_dir_all(dir).unwrap();
        let p = path(dir, 0);
        let good = [entry(3, 0, 4), entry(5, 2, 9)];
        let mut bytes: Vec<u8> = good.iter().flat_map(encode).collect();
        fs.put_durable(&p, &bytes);
        assert_eq!(load(&fs, &p, 0, 100).unwrap(), (good.to_vec(), false));

        // What a power loss leaves after the file grew but its new page never reached the disk: zeros, read as
        // "producer 0 aborted a transaction at offset 0" before this was checked.
        bytes.extend_from_slice(&[0u8; ENTRY_SIZE]);
        fs.put_durable(&p, &bytes);
        assert_eq!(load(&fs, &p, 0, 100).unwrap(), (good.to_vec(), true));

        // A torn entry, an entry out of marker order, and one whose marker is before the segment.
        for tail in [
            encode(&entry(7, 10, 12))[..20].to_vec(),
            encode(&entry(7, 3, 8)).to_vec(),
        ] {
            let mut b = good.iter().flat_map(encode).collect::<Vec<u8>>();
            b.extend_from_slice(&tail);
            fs.put_durable(&p, &b);
            assert_eq!(load(&fs, &p, 0, 100).unwrap(), (good.to_vec(), true));
        }
        fs.put_durable(&p, &encode(&entry(7, 3, 8)));
        assert_eq!(load(&fs, &p, 10, 100).unwrap(), (vec![], true));
        // Markers at or beyond the recovered end are dropped too.
        fs.put_durable(&p, &good.iter().flat_map(encode).collect::<Vec<u8>>());
        assert_eq!(load(&fs, &p, 0, 9).unwrap(), (vec![good[0]], true));
    }
}
