//! Local state stores: the [`KeyValueStore`] trait, its in-memory and `fjall` implementations, and
//! [`WindowStore`], the window layout over any key-value store.
//!
//! A store holds the state of one stateful operator for one task (one input partition). The runtime keeps a
//! write cache in front of it and writes the cache to the store and to the store's changelog topic at each
//! commit; a task that starts restores its stores from the changelog first, so the local store is a cache of
//! the changelog, never the only copy.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use crate::error::{Error, Result};
use crate::record::Window;

/// Ordered byte keys to byte values, local to one task.
pub trait KeyValueStore: Send {
    /// The value stored under `key`.
    fn get(&self, key: &[u8]) -> Result<Option<Bytes>>;
    /// Applies puts (`Some`) and deletes (`None`) in order; the runtime calls it once per commit.
    fn write_batch(
        &mut self,
        batch: &mut dyn Iterator<Item = (Bytes, Option<Bytes>)>,
    ) -> Result<()>;
    /// Every entry whose key starts with `prefix`, by ascending key.
    fn prefix_scan(&self, prefix: &[u8]) -> Result<Vec<(Bytes, Bytes)>>;
    /// Removes everything (before a restore from the changelog).
    fn clear(&mut self) -> Result<()>;
}

/// Opens the stores of the tasks an instance runs.
pub trait StoreSupplier: Send + Sync {
    /// The store `name` for the task of input partition `partition`, empty or as left by an earlier run (the
    /// runtime clears it before restoring).
    fn open(&self, name: &str, partition: i32) -> Result<Box<dyn KeyValueStore>>;
}

/// A `BTreeMap` store; state lives only as long as the process, the changelog restores it.
#[derive(Default)]
pub struct InMemoryStore {
    map: BTreeMap<Bytes, Bytes>,
}

impl KeyValueStore for InMemoryStore {
    fn get(&self, key: &[u8]) -> Result<Option<Bytes>> {
        Ok(self.map.get(key).cloned())
    }

    fn write_batch(
        &mut self,
        batch: &mut dyn Iterator<Item = (Bytes, Option<Bytes>)>,
    ) -> Result<()> {
        for (k, v) in batch {
            match v {
                Some(v) => {
                    self.map.insert(k, v);
                }
                None => {
                    self.map.remove(&k);
                }
            }
        }
        Ok(())
    }

    fn prefix_scan(&self, prefix: &[u8]) -> Result<Vec<(Bytes, Bytes)>> {
        Ok(self
            .map
            .range::<[u8], _>((
                std::ops::Bound::Included(prefix),
                std::ops::Bound::Unbounded,
            ))
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    fn clear(&mut self) -> Result<()> {
        self.map.clear();
        Ok(())
    }
}

/// Supplies [`InMemoryStore`]s.
#[derive(Default, Clone, Copy)]
pub struct InMemorySupplier;

impl StoreSupplier for InMemorySupplier {
    fn open(&self, _name: &str, _partition: i32) -> Result<Box<dyn KeyValueStore>> {
        Ok(Box::new(InMemoryStore::default()))
    }
}

/// Stores in one `fjall` database under a directory (one keyspace per store and partition). State larger than
/// memory spills to disk; durability still comes from the changelog (the journal is not fsynced per commit).
#[cfg(feature = "fjall")]
pub struct FjallSupplier {
    db: fjall::Database,
    path: PathBuf,
}

#[cfg(feature = "fjall")]
impl FjallSupplier {
    /// Opens (or creates) the database in `dir`. One process at a time may hold it (fjall locks the directory).
    pub fn open(dir: &Path) -> Result<FjallSupplier> {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::Store(format!("{}: {e}", dir.display())))?;
        let db = fjall::Database::builder(dir)
            .manual_journal_persist(true)
            .open()
            .map_err(|e| {
                Error::Store(format!("opening fjall database in {}: {e}", dir.display()))
            })?;
        Ok(FjallSupplier {
            db,
            path: dir.to_path_buf(),
        })
    }
}

#[cfg(feature = "fjall")]
impl StoreSupplier for FjallSupplier {
    fn open(&self, name: &str, partition: i32) -> Result<Box<dyn KeyValueStore>> {
        let ks_name = format!("{name}.{partition}");
        let ks = self
            .db
            .keyspace(&ks_name, fjall::KeyspaceCreateOptions::default)
            .map_err(|e| {
                Error::Store(format!("{}: keyspace {ks_name}: {e}", self.path.display()))
            })?;
        Ok(Box::new(FjallStore {
            db: self.db.clone(),
            ks,
        }))
    }
}

#[cfg(feature = "fjall")]
struct FjallStore {
    db: fjall::Database,
    ks: fjall::Keyspace,
}

#[cfg(feature = "fjall")]
fn fj(e: fjall::Error) -> Error {
    Error::Store(format!("fjall: {e}"))
}

#[cfg(feature = "fjall")]
impl KeyValueStore for FjallStore {
    fn get(&self, key: &[u8]) -> Result<Option<Bytes>> {
        Ok(self
            .ks
            .get(key)
            .map_err(fj)?
            .map(|v| Bytes::copy_from_slice(&v)))
    }

    fn write_batch(
        &mut self,
        batch: &mut dyn Iterator<Item = (Bytes, Option<Bytes>)>,
    ) -> Result<()> {
        let mut b = self.db.batch();
        for (k, v) in batch {
            match v {
                Some(v) => b.insert(&self.ks, &k[..], &v[..]),
                None => b.remove(&self.ks, &k[..]),
            }
        }
        b.commit().map_err(fj)
    }

    fn prefix_scan(&self, prefix: &[u8]) -> Result<Vec<(Bytes, Bytes)>> {
        let mut out = Vec::new();
        for g in self.ks.prefix(prefix) {
            let (k, v) = g.into_inner().map_err(fj)?;
            out.push((Bytes::copy_from_slice(&k), Bytes::copy_from_slice(&v)));
        }
        Ok(out)
    }

    fn clear(&mut self) -> Result<()> {
        self.ks.clear().map_err(fj)
    }
}

/// Windowed aggregates over a [`KeyValueStore`]: entries keyed by (key, window).
///
/// Layout of a store key: `len(key):u32be ‖ key ‖ start ‖ end`, the bounds as big-endian `i64` with the sign
/// bit flipped so that byte order is numeric order. All windows of one key are thus adjacent and sorted by start.
pub struct WindowStore;

impl WindowStore {
    /// The store key of `key` in window `w`.
    pub fn store_key(key: &[u8], w: Window) -> Bytes {
        let mut out = Vec::with_capacity(4 + key.len() + 16);
        out.extend_from_slice(&(key.len() as u32).to_be_bytes());
        out.extend_from_slice(key);
        out.extend_from_slice(&flip(w.start));
        out.extend_from_slice(&flip(w.end));
        Bytes::from(out)
    }

    /// The prefix shared by every window of `key`.
    pub fn key_prefix(key: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(4 + key.len());
        out.extend_from_slice(&(key.len() as u32).to_be_bytes());
        out.extend_from_slice(key);
        out
    }

    /// Splits a store key back into the record key and the window; `None` if it is not in the layout.
    pub fn parse(store_key: &[u8]) -> Option<(&[u8], Window)> {
        let len = u32::from_be_bytes(store_key.get(..4)?.try_into().ok()?) as usize;
        if store_key.len() != 4 + len + 16 {
            return None;
        }
        let key = &store_key[4..4 + len];
        let start = unflip(store_key[4 + len..12 + len].try_into().ok()?);
        let end = unflip(store_key[12 + len..].try_into().ok()?);
        Some((key, Window { start, end }))
    }

    /// Every window of `key` with its value, by ascending start.
    pub fn windows_of(store: &dyn KeyValueStore, key: &[u8]) -> Result<Vec<(Window, Bytes)>> {
        let mut out = Vec::new();
        for (k, v) in store.prefix_scan(&Self::key_prefix(key))? {
            if let Some((_, w)) = Self::parse(&k) {
                out.push((w, v));
            }
        }
        Ok(out)
    }
}

fn flip(v: i64) -> [u8; 8] {
    ((v as u64) ^ (1 << 63)).to_be_bytes()
}

fn unflip(b: [u8; 8]) -> i64 {
    (u64::from_be_bytes(b) ^ (1 << 63)) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exercise(store: &mut dyn KeyValueStore) {
        let w = |s, e| Window { start: s, end: e };
        let mut batch = vec![
            (
                WindowStore::store_key(b"a", w(10, 20)),
                Some(Bytes::from_static(b"1")),
            ),
            (
                WindowStore::store_key(b"a", w(-5, 5)),
                Some(Bytes::from_static(b"2")),
            ),
            (
                WindowStore::store_key(b"ab", w(0, 10)),
                Some(Bytes::from_static(b"3")),
            ),
            (
                WindowStore::store_key(b"b", w(0, 10)),
                Some(Bytes::from_static(b"4")),
            ),
        ]
        .into_iter();
        store.write_batch(&mut batch).unwrap();
        let got = WindowStore::windows_of(store, b"a").unwrap();
        assert_eq!(
            got,
            vec![
                (w(-5, 5), Bytes::from_static(b"2")),
                (w(10, 20), Bytes::from_static(b"1"))
            ],
            "only key a's windows, by ascending start, negative first"
        );
        let k = WindowStore::store_key(b"a", w(10, 20));
        assert_eq!(WindowStore::parse(&k), Some((&b"a"[..], w(10, 20))));
        store
            .write_batch(&mut std::iter::once((k.clone(), None)))
            .unwrap();
        assert_eq!(store.get(&k).unwrap(), None);
        assert_eq!(WindowStore::windows_of(store, b"a").unwrap().len(), 1);
        store.clear().unwrap();
        assert!(store.prefix_scan(b"").unwrap().is_empty());
    }

    #[test]
    fn in_memory_store_keeps_windows_of_a_key_together() {
        exercise(&mut InMemoryStore::default());
    }

    #[cfg(feature = "fjall")]
    #[test]
    fn fjall_store_keeps_windows_of_a_key_together_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let sup = FjallSupplier::open(dir.path()).unwrap();
            let mut s = sup.open("counts", 3).unwrap();
            exercise(s.as_mut());
            s.write_batch(&mut std::iter::once((
                Bytes::from_static(b"k"),
                Some(Bytes::from_static(b"v")),
            )))
            .unwrap();
        }
        let sup = FjallSupplier::open(dir.path()).unwrap();
        let s = sup.open("counts", 3).unwrap();
        assert_eq!(s.get(b"k").unwrap(), Some(Bytes::from_static(b"v")));
        let other = sup.open("counts", 4).unwrap();
        assert_eq!(other.get(b"k").unwrap(), None, "partitions are separate");
    }

    #[test]
    fn malformed_store_keys_do_not_parse() {
        assert!(WindowStore::parse(b"").is_none());
        assert!(WindowStore::parse(&[0, 0, 0, 9, 1, 2]).is_none());
    }
}
