//! A simulated disk for fault-injection tests, in the spirit of TigerBeetle's storage simulator and Jepsen's
//! LazyFS: the real log code runs over [`SimStorage`] (through the [`Storage`] trait), which keeps two views of
//! every file and directory, what the page cache shows and what is durable, and can, from a seed:
//!
//! - fail a write, `set_len`, fsync, create, rename or remove with EIO or ENOSPC ([`Faults`]);
//! - tear a write: a random prefix reaches the file, then the write fails;
//! - lose a failed fsync's data for good ("fsyncgate": after a failed fsync the kernel marks the dirty pages
//!   clean; they stay readable in the page cache, even for a new process, but are never written back, so code
//!   that retries an fsync into success, or a restarted process that fsyncs what it reads, loses them at the next
//!   power loss; pages written again afterwards are dirty again and do reach the disk);
//! - lose power ([`SimStorage::power_loss`]): every directory falls back to its durable entries plus a random
//!   prefix of the operations done since its last fsync (journals commit in order), and every file to its durable
//!   contents plus, on some crashes, a random subset of its unsynced 4 KiB pages and a random length in between
//!   (torn and zero-filled tails, as ext4 can leave them);
//! - crash the process only ([`SimStorage::process_crash`]): nothing is lost, handles go stale.
//!
//! Directories themselves (not their entries) are durable as soon as they are created: the partition
//! directory's own durability is the broker's business, not the log's.
//!
//! Everything is deterministic for a seed, so a failing run is replayed by its seed.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::storage::{FileHandle, Open, Storage};

const PAGE: usize = 4096;

/// A small deterministic random generator (SplitMix64): enough for fault schedules, no dependency.
#[derive(Clone, Debug)]
pub struct SimRng(u64);

impl SimRng {
    pub fn new(seed: u64) -> SimRng {
        SimRng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p && p > 0.0
    }
}

/// Probabilities of injected faults, per operation of each kind.
#[derive(Clone, Copy, Debug, Default)]
pub struct Faults {
    /// A write or `set_len` fails (EIO or ENOSPC); half of the failing writes are torn (a prefix lands).
    pub write: f64,
    /// An fsync (file or directory) fails with EIO; the file's unsynced data is then lost for good.
    pub fsync: f64,
    /// Creating, renaming or removing a file fails with EIO or ENOSPC before doing anything.
    pub metadata: f64,
}

/// What the simulator did, for the test's report.
#[derive(Clone, Copy, Debug, Default)]
pub struct SimStats {
    pub failed_writes: u64,
    pub torn_writes: u64,
    pub failed_fsyncs: u64,
    pub failed_metadata: u64,
    pub power_losses: u64,
    pub process_crashes: u64,
    /// File handles open right now (like a process's open file descriptors).
    pub open_handles: u64,
}

#[derive(Clone, Debug, Default)]
struct Inode {
    /// What reads see (the page cache).
    data: Vec<u8>,
    /// What survives a power loss.
    durable: Vec<u8>,
    /// Pages written since they were last written back; a failed fsync clears this without writing them.
    dirty: std::collections::BTreeSet<usize>,
    /// The length changed since the last write-back.
    len_dirty: bool,
}

impl Inode {
    fn mark(&mut self, from: usize, to: usize) {
        if to > from {
            self.dirty.extend(from / PAGE..=(to - 1) / PAGE);
        }
    }

    /// Write-back of every dirty page and the length (a successful fsync).
    fn write_back(&mut self) {
        let len = self.data.len();
        self.durable.resize(len, 0);
        for &page in &self.dirty {
            let start = page * PAGE;
            if start < len {
                let end = (start + PAGE).min(len);
                self.durable[start..end].copy_from_slice(&self.data[start..end]);
            }
        }
        self.dirty.clear();
        self.len_dirty = false;
    }
}

#[derive(Clone, Debug)]
enum DirOp {
    Link(String, u64),
    Unlink(String),
}

#[derive(Clone, Debug, Default)]
struct Dir {
    entries: BTreeMap<String, u64>,
    durable: BTreeMap<String, u64>,
    /// Entry changes since the last directory fsync, in order.
    pending: Vec<DirOp>,
}

impl Dir {
    fn link(&mut self, name: &str, ino: u64) {
        self.entries.insert(name.to_string(), ino);
        self.pending.push(DirOp::Link(name.to_string(), ino));
    }

    fn unlink(&mut self, name: &str) -> Option<u64> {
        let ino = self.entries.remove(name)?;
        self.pending.push(DirOp::Unlink(name.to_string()));
        Some(ino)
    }
}

#[derive(Debug)]
struct State {
    rng: SimRng,
    faults: Faults,
    inodes: BTreeMap<u64, Inode>,
    next_ino: u64,
    dirs: BTreeMap<PathBuf, Dir>,
    /// Bumped at every crash: handles opened before it are stale.
    generation: u64,
    stats: SimStats,
}

/// The simulated disk. Cheap to clone (shared state).
#[derive(Clone, Debug)]
pub struct SimStorage(Arc<Mutex<State>>);

fn eio(what: &str) -> io::Error {
    io::Error::other(format!("injected EIO: {what}"))
}

fn injected(rng: &mut SimRng, what: &str) -> io::Error {
    if rng.chance(0.5) {
        eio(what)
    } else {
        io::Error::new(
            io::ErrorKind::StorageFull,
            format!("injected ENOSPC: {what}"),
        )
    }
}

fn split(path: &Path) -> io::Result<(PathBuf, String)> {
    let parent = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
    Ok((parent, name.to_string()))
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{}: no such file", path.display()),
    )
}

impl State {
    fn dir(&mut self, path: &Path) -> io::Result<&mut Dir> {
        self.dirs.get_mut(path).ok_or_else(|| not_found(path))
    }

    fn lookup(&self, path: &Path) -> io::Result<u64> {
        let (parent, name) = split(path)?;
        self.dirs
            .get(&parent)
            .and_then(|d| d.entries.get(&name))
            .copied()
            .ok_or_else(|| not_found(path))
    }

    fn metadata_fault(&mut self, what: &str) -> io::Result<()> {
        if self.rng.chance(self.faults.metadata) {
            self.stats.failed_metadata += 1;
            return Err(injected(&mut self.rng, what));
        }
        Ok(())
    }
}

impl SimStorage {
    pub fn new(seed: u64) -> SimStorage {
        SimStorage(Arc::new(Mutex::new(State {
            rng: SimRng::new(seed),
            faults: Faults::default(),
            inodes: BTreeMap::new(),
            next_ino: 1,
            dirs: BTreeMap::new(),
            generation: 0,
            stats: SimStats::default(),
        })))
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets the fault probabilities from now on (all zero: a perfect disk).
    pub fn set_faults(&self, faults: Faults) {
        self.state().faults = faults;
    }

    pub fn stats(&self) -> SimStats {
        self.state().stats
    }

    /// The process dies (kill -9): the page cache survives, open handles do not.
    pub fn process_crash(&self) {
        let mut s = self.state();
        s.generation += 1;
        s.stats.process_crashes += 1;
    }

    /// Power loss: only what was made durable survives, plus (on some crashes) a random part of what was not.
    pub fn power_loss(&self) {
        let mut guard = self.state();
        let s = &mut *guard;
        s.generation += 1;
        s.stats.power_losses += 1;
        // Some crashes lose every unsynced byte (LazyFS's model); others let part of the write-back through.
        let partial = s.rng.chance(0.5);
        let mut live: HashMap<u64, ()> = HashMap::new();
        for dir in s.dirs.values_mut() {
            let keep = if partial {
                s.rng.below(dir.pending.len() as u64 + 1) as usize
            } else {
                0
            };
            let mut entries = dir.durable.clone();
            for op in &dir.pending[..keep] {
                match op {
                    DirOp::Link(name, ino) => {
                        entries.insert(name.clone(), *ino);
                    }
                    DirOp::Unlink(name) => {
                        entries.remove(name);
                    }
                }
            }
            dir.entries = entries.clone();
            dir.durable = entries;
            dir.pending.clear();
            for ino in dir.entries.values() {
                live.insert(*ino, ());
            }
        }
        s.inodes.retain(|ino, _| live.contains_key(ino));
        for inode in s.inodes.values_mut() {
            let mut contents = inode.durable.clone();
            if partial && (inode.len_dirty || !inode.dirty.is_empty()) {
                let new_len = if !inode.len_dirty {
                    inode.durable.len()
                } else {
                    match s.rng.below(3) {
                        0 => inode.durable.len(),
                        1 => inode.data.len(),
                        _ => {
                            let (a, b) = if inode.durable.len() <= inode.data.len() {
                                (inode.durable.len(), inode.data.len())
                            } else {
                                (inode.data.len(), inode.durable.len())
                            };
                            a + s.rng.below((b - a) as u64 + 1) as usize
                        }
                    }
                };
                contents.resize(new_len, 0);
                for &page in &inode.dirty {
                    let start = page * PAGE;
                    if start >= new_len || !s.rng.chance(0.5) {
                        continue;
                    }
                    let end = (start + PAGE).min(new_len);
                    for (i, byte) in contents[start..end].iter_mut().enumerate() {
                        *byte = inode.data.get(start + i).copied().unwrap_or(0);
                    }
                }
            }
            inode.data = contents.clone();
            inode.durable = contents;
            inode.dirty.clear();
            inode.len_dirty = false;
        }
    }

    /// Writes a file directly (test set-up), durably.
    pub fn put_durable(&self, path: &Path, bytes: &[u8]) {
        let f = self.open(path, Open::Truncate).expect("put_durable: open");
        f.write_all_at(bytes, 0).expect("put_durable: write");
        f.sync_all().expect("put_durable: sync");
        let parent = path.parent().unwrap_or(Path::new(""));
        self.sync_dir(parent).expect("put_durable: sync dir");
    }
}

/// An open simulated file.
struct SimFile {
    storage: SimStorage,
    ino: u64,
    generation: u64,
}

impl Drop for SimFile {
    fn drop(&mut self) {
        self.storage.state().stats.open_handles -= 1;
    }
}

impl SimFile {
    fn with<T>(&self, op: impl FnOnce(&mut State, u64) -> io::Result<T>) -> io::Result<T> {
        let mut s = self.storage.state();
        if s.generation != self.generation {
            return Err(eio("stale handle after a crash"));
        }
        if !s.inodes.contains_key(&self.ino) {
            return Err(eio("file vanished"));
        }
        op(&mut s, self.ino)
    }
}

impl FileHandle for SimFile {
    fn read_exact_at(&self, buf: &mut [u8], pos: u64) -> io::Result<()> {
        self.with(|s, ino| {
            let data = &s.inodes[&ino].data;
            let start = pos as usize;
            let end = start
                .checked_add(buf.len())
                .filter(|&e| e <= data.len())
                .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "read past the end"))?;
            buf.copy_from_slice(&data[start..end]);
            Ok(())
        })
    }

    fn write_all_at(&self, buf: &[u8], pos: u64) -> io::Result<()> {
        self.with(|s, ino| {
            let mut len = buf.len();
            let mut fail = None;
            if s.rng.chance(s.faults.write) {
                if s.rng.chance(0.5) && !buf.is_empty() {
                    len = s.rng.below(buf.len() as u64) as usize;
                    s.stats.torn_writes += 1;
                } else {
                    len = 0;
                }
                s.stats.failed_writes += 1;
                fail = Some(injected(&mut s.rng, "write"));
            }
            let inode = s.inodes.get_mut(&ino).expect("checked");
            let start = pos as usize;
            if inode.data.len() < start + len {
                let old = inode.data.len();
                inode.data.resize(start + len, 0);
                // The new zeros need no page of their own: write-back extends the file with zeros anyway.
                inode.mark(old.div_ceil(PAGE) * PAGE, start + len);
                inode.len_dirty = true;
            }
            inode.data[start..start + len].copy_from_slice(&buf[..len]);
            inode.mark(start, start + len);
            match fail {
                Some(e) => Err(e),
                None => Ok(()),
            }
        })
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.with(|s, ino| {
            if s.rng.chance(s.faults.write) {
                s.stats.failed_writes += 1;
                return Err(injected(&mut s.rng, "set_len"));
            }
            let inode = s.inodes.get_mut(&ino).expect("checked");
            let (old, new) = (inode.data.len(), len as usize);
            inode.data.resize(new, 0);
            inode.mark(old.div_ceil(PAGE) * PAGE, new);
            inode.len_dirty = true;
            Ok(())
        })
    }

    fn len(&self) -> io::Result<u64> {
        self.with(|s, ino| Ok(s.inodes[&ino].data.len() as u64))
    }

    fn sync_data(&self) -> io::Result<()> {
        self.with(|s, ino| {
            if s.rng.chance(s.faults.fsync) {
                s.stats.failed_fsyncs += 1;
                // The kernel gives up on the dirty pages: they are marked clean, never written.
                let inode = s.inodes.get_mut(&ino).expect("checked");
                inode.dirty.clear();
                inode.len_dirty = false;
                return Err(eio("fsync"));
            }
            s.inodes.get_mut(&ino).expect("checked").write_back();
            Ok(())
        })
    }

    fn sync_all(&self) -> io::Result<()> {
        self.sync_data()
    }

    fn modified_ms(&self) -> Option<i64> {
        None
    }
}

impl Storage for SimStorage {
    fn open(&self, path: &Path, how: Open) -> io::Result<Arc<dyn FileHandle>> {
        let mut s = self.state();
        let (parent, name) = split(path)?;
        let existing = s.lookup(path).ok();
        let ino = match (existing, how) {
            (Some(ino), Open::Truncate) => {
                s.metadata_fault("truncate")?;
                let inode = s.inodes.get_mut(&ino).expect("linked");
                inode.data.clear();
                inode.len_dirty = true;
                ino
            }
            (Some(ino), _) => ino,
            (None, Open::Existing) => return Err(not_found(path)),
            (None, _) => {
                s.dir(&parent)?;
                s.metadata_fault("create")?;
                let ino = s.next_ino;
                s.next_ino += 1;
                s.inodes.insert(ino, Inode::default());
                s.dir(&parent)?.link(&name, ino);
                ino
            }
        };
        s.stats.open_handles += 1;
        Ok(Arc::new(SimFile {
            storage: self.clone(),
            ino,
            generation: s.generation,
        }))
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let s = self.state();
        let ino = s.lookup(path)?;
        Ok(s.inodes[&ino].data.clone())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut s = self.state();
        let ino = s.lookup(from)?;
        s.metadata_fault("rename")?;
        let (fp, fname) = split(from)?;
        let (tp, tname) = split(to)?;
        s.dir(&tp)?;
        // Link the new name first: a crash in between keeps the file under one name or both, never none.
        s.dir(&tp)?.link(&tname, ino);
        s.dir(&fp)?.unlink(&fname);
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut s = self.state();
        s.lookup(path)?;
        s.metadata_fault("remove")?;
        let (parent, name) = split(path)?;
        s.dir(&parent)?.unlink(&name);
        Ok(())
    }

    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut s = self.state();
        s.metadata_fault("remove_dir_all")?;
        let doomed: Vec<PathBuf> = s
            .dirs
            .keys()
            .filter(|d| d.starts_with(path))
            .cloned()
            .collect();
        if doomed.is_empty() {
            return Err(not_found(path));
        }
        for d in doomed {
            s.dirs.remove(&d);
        }
        Ok(())
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut s = self.state();
        for a in path.ancestors() {
            s.dirs.entry(a.to_path_buf()).or_default();
        }
        Ok(())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let s = self.state();
        let d = s.dirs.get(dir).ok_or_else(|| not_found(dir))?;
        let mut names: Vec<String> = d.entries.keys().cloned().collect();
        names.extend(
            s.dirs
                .keys()
                .filter(|p| p.parent() == Some(dir))
                .filter_map(|p| p.file_name()?.to_str().map(str::to_string)),
        );
        Ok(names)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut s = self.state();
        let p = s.faults.fsync;
        if s.rng.chance(p) {
            s.stats.failed_fsyncs += 1;
            return Err(eio("directory fsync"));
        }
        let d = s.dir(dir)?;
        d.durable = d.entries.clone();
        d.pending.clear();
        Ok(())
    }

    fn exists(&self, path: &Path) -> bool {
        let s = self.state();
        s.lookup(path).is_ok() || s.dirs.contains_key(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn power_loss_keeps_exactly_what_was_synced_when_write_back_is_lost() {
        // Try seeds until one takes the "lose every unsynced byte" branch, then check it precisely.
        for seed in 0..64 {
            let sim = SimStorage::new(seed);
            let dir = Path::new("/d");
            sim.create_dir_all(dir).unwrap();
            let f = sim.open(&dir.join("a"), Open::Create).unwrap();
            f.write_all_at(b"durable", 0).unwrap();
            f.sync_data().unwrap();
            sim.sync_dir(dir).unwrap();
            f.write_all_at(b" and volatile", 7).unwrap();
            sim.open(&dir.join("b"), Open::Create).unwrap();
            sim.power_loss();
            assert!(f.len().is_err(), "handles are stale after a crash");
            let a = sim.read(&dir.join("a")).unwrap();
            assert!(a.starts_with(b"durable"), "synced data always survives");
            if a == b"durable" && !sim.exists(&dir.join("b")) {
                return;
            }
        }
        panic!("no seed lost all unsynced data");
    }

    #[test]
    fn a_failed_fsync_is_never_retried_into_durability() {
        let sim = SimStorage::new(7);
        let dir = Path::new("/d");
        sim.create_dir_all(dir).unwrap();
        let f = sim.open(&dir.join("a"), Open::Create).unwrap();
        sim.sync_dir(dir).unwrap();
        f.write_all_at(b"acknowledged?", 0).unwrap();
        sim.set_faults(Faults {
            fsync: 1.0,
            ..Faults::default()
        });
        assert!(f.sync_data().is_err());
        sim.set_faults(Faults::default());
        assert_eq!(
            sim.read(&dir.join("a")).unwrap(),
            b"acknowledged?",
            "still readable"
        );
        assert!(f.sync_data().is_ok(), "the retry reports success...");
        // A later write to another page is dirty again and reaches the disk; the dropped page does not.
        f.write_all_at(b"!", 5000).unwrap();
        f.sync_data().unwrap();
        sim.power_loss();
        let after = sim.read(&dir.join("a")).unwrap();
        assert_eq!(
            after.len(),
            5001,
            "the length and the later write reached the disk"
        );
        assert_eq!(after[5000], b'!');
        assert_eq!(
            &after[..13],
            &[0u8; 13],
            "...but the page dropped by the failed fsync is gone"
        );
    }

    #[test]
    fn torn_writes_leave_a_prefix_and_an_error() {
        let sim = SimStorage::new(3);
        let dir = Path::new("/d");
        sim.create_dir_all(dir).unwrap();
        let f = sim.open(&dir.join("a"), Open::Create).unwrap();
        let mut torn = 0;
        for _ in 0..20 {
            sim.set_faults(Faults::default());
            f.set_len(0).unwrap();
            sim.set_faults(Faults {
                write: 1.0,
                ..Faults::default()
            });
            assert!(f.write_all_at(&[1u8; 100], 0).is_err());
            if f.len().unwrap() > 0 {
                torn += 1;
            }
        }
        assert!(torn > 0, "some failing writes land a prefix");
        assert!(sim.stats().failed_writes >= 20);
    }
}
