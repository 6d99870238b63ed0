//! The identities of the schema texts lookups (`POST /subjects/{s}`) parsed, so that a serializer looking
//! the same text up for every producer it starts costs a map read instead of a parse.
//!
//! Identity is a pure function of (type, text) for a schema without references, so an entry never goes
//! stale; lookups with references are not cached (a reference names a subject version, whose text a
//! permanent delete and an IMPORT can replace). Only texts whose identity was registered when they were
//! looked up are kept (a client looking up texts that were never registered fills nothing), and the cache
//! is bounded by the bytes it holds ([`MAX_BYTES`]), not by a count: it is cleared when the next entry
//! would exceed that. A hit clones no text: the key is hashed from borrowed parts (with a per-process
//! random hasher key, so a client cannot aim for collisions) and compared in full.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, RwLock};

/// The most bytes of keys and identities the cache holds.
pub const MAX_BYTES: usize = 16 * 1024 * 1024;
/// The longest text the cache keeps (a larger one is parsed on every lookup).
pub const MAX_TEXT: usize = 1024 * 1024;
/// What an entry costs beyond its strings (map slot, boxes, counts), for the byte bound.
const ENTRY_OVERHEAD: usize = 128;

struct Entry {
    subject: Box<str>,
    schema_type: Option<Box<str>>,
    text: Box<str>,
    identity: Arc<str>,
}

impl Entry {
    fn is(&self, subject: &str, schema_type: Option<&str>, text: &str) -> bool {
        &*self.subject == subject
            && self.schema_type.as_deref() == schema_type
            && &*self.text == text
    }

    fn bytes(&self) -> usize {
        self.subject.len()
            + self.schema_type.as_ref().map_or(0, |t| t.len())
            + self.text.len()
            + self.identity.len()
            + ENTRY_OVERHEAD
    }
}

#[derive(Default)]
struct Inner {
    /// By the hash of (subject, type, text); entries with the same hash share a bucket.
    buckets: HashMap<u64, Vec<Entry>>,
    bytes: usize,
    entries: usize,
}

pub struct LookupCache {
    hasher: RandomState,
    inner: RwLock<Inner>,
}

impl Default for LookupCache {
    fn default() -> Self {
        LookupCache {
            hasher: RandomState::new(),
            inner: RwLock::new(Inner::default()),
        }
    }
}

impl LookupCache {
    fn hash(&self, subject: &str, schema_type: Option<&str>, text: &str) -> u64 {
        self.hasher.hash_one((subject, schema_type, text))
    }

    /// The identity remembered for `text` looked up in `subject`.
    pub fn get(&self, subject: &str, schema_type: Option<&str>, text: &str) -> Option<Arc<str>> {
        let key = self.hash(subject, schema_type, text);
        let inner = self.inner.read().unwrap_or_else(|p| p.into_inner());
        inner
            .buckets
            .get(&key)?
            .iter()
            .find(|e| e.is(subject, schema_type, text))
            .map(|e| e.identity.clone())
    }

    /// Remembers `identity` (which the caller found registered) for `text` looked up in `subject`.
    pub fn insert(&self, subject: &str, schema_type: Option<&str>, text: &str, identity: &str) {
        if text.len() > MAX_TEXT {
            return;
        }
        let entry = Entry {
            subject: subject.into(),
            schema_type: schema_type.map(Into::into),
            text: text.into(),
            identity: identity.into(),
        };
        let size = entry.bytes();
        let key = self.hash(subject, schema_type, text);
        let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
        let bucket = inner.buckets.entry(key).or_default();
        if bucket.iter().any(|e| e.is(subject, schema_type, text)) {
            return;
        }
        if inner.bytes + size > MAX_BYTES {
            *inner = Inner::default();
        }
        inner.bytes += size;
        inner.entries += 1;
        inner.buckets.entry(key).or_default().push(entry);
    }

    /// (entries, bytes) held now.
    pub fn usage(&self) -> (usize, usize) {
        let inner = self.inner.read().unwrap_or_else(|p| p.into_inner());
        (inner.entries, inner.bytes)
    }
}
