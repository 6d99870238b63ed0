//! The standalone worker's source offsets, kept in a local file (`offset.storage.file.filename`).
//!
//! Each entry is Connect's offset key and value: the key `[connector, partition]` and the value `offset`, both
//! JSON (a FileStreamSource's partition is `{"filename": ...}` and its offset `{"position": ...}`), as Connect
//! writes them to its offsets topic.
//!
//! **Durability invariant:** the file on disk is always a complete snapshot: it is written to a temporary file,
//! fsynced, renamed over the old one and the directory fsynced. Its first line carries the body's length and
//! CRC-32C, so a torn, empty or foreign file is detected when the worker starts and reported with what to do;
//! it is never silently treated as "no offsets" (that would re-send every file from the start, or worse,
//! skip nothing and look fine).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::topics::TopicWriter;

const MAGIC: &str = "fjord-connect-offsets v1";

/// Offsets by connector, then by the JSON text of the source partition.
type Offsets = BTreeMap<String, BTreeMap<String, (Value, Value)>>;

/// Where offsets are kept: the standalone worker's file, or the distributed worker's offsets topic.
enum Backend {
    File(PathBuf),
    Topic(TopicWriter),
}

/// The offsets of every connector, in memory and in the file or topic.
pub struct OffsetStore {
    backend: Backend,
    /// The offsets as last put; `flush` writes them (all of them to the file, those put since the last flush to
    /// the topic).
    offsets: Mutex<Offsets>,
    /// The entries put since the last flush to the topic: (connector, partition's JSON text).
    dirty: Mutex<BTreeSet<(String, String)>>,
    /// Serialises writers (two tasks flushing at once would race on the temporary file).
    write_lock: tokio::sync::Mutex<()>,
}

impl OffsetStore {
    /// Opens the store at `path`: an absent file is an empty store; a file that is not a complete one
    /// written by this store is an error that names the file and says what to do.
    pub fn open(path: &Path) -> Result<OffsetStore> {
        let offsets = match std::fs::read(path) {
            Ok(bytes) => parse(&bytes).map_err(|why| {
                Error::Internal(format!(
                    "the offsets file {} cannot be used: {why}. The source connectors' positions are unknown; \
                     restore the file from a backup, or move it aside to start over (the sources then re-read \
                     their input from the beginning)",
                    path.display()
                ))
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Offsets::new(),
            Err(e) => {
                return Err(Error::Internal(format!(
                    "cannot read the offsets file {}: {e}",
                    path.display()
                )))
            }
        };
        Ok(OffsetStore {
            backend: Backend::File(path.to_path_buf()),
            offsets: Mutex::new(offsets),
            dirty: Mutex::new(BTreeSet::new()),
            write_lock: tokio::sync::Mutex::new(()),
        })
    }

    /// Opens the store on Connect's offsets topic (`offset.storage.topic`), reading it to its end. Records are
    /// Connect's: the key `["<connector>", {partition}]`, the value the offset (null: removed), both JSON. A record
    /// of another shape (a connector that is not a file source may write anything) is kept out with a warning.
    pub fn from_topic(bootstrap: &str, topic: &str) -> Result<OffsetStore> {
        let offsets = load_topic(bootstrap, topic)?;
        let writer = TopicWriter::new(bootstrap, topic).map_err(Error::Internal)?;
        Ok(OffsetStore {
            backend: Backend::Topic(writer),
            offsets: Mutex::new(offsets),
            dirty: Mutex::new(BTreeSet::new()),
            write_lock: tokio::sync::Mutex::new(()),
        })
    }

    /// An empty store on a topic through `writer`, without reading the topic (tests).
    #[cfg(test)]
    pub(crate) fn on_topic_writer(writer: TopicWriter) -> OffsetStore {
        OffsetStore {
            backend: Backend::Topic(writer),
            offsets: Mutex::new(Offsets::new()),
            dirty: Mutex::new(BTreeSet::new()),
            write_lock: tokio::sync::Mutex::new(()),
        }
    }

    /// Reads the offsets topic to its end again (a worker taking over connectors from another one), replacing
    /// what is in memory.
    pub fn reload_from_topic(&self, bootstrap: &str, topic: &str) -> Result<()> {
        let offsets = load_topic(bootstrap, topic)?;
        *self.offsets.lock().unwrap() = offsets;
        self.dirty.lock().unwrap().clear();
        Ok(())
    }

    /// Reads the offsets topic to its end again and takes from it only `connectors`' offsets (connectors this
    /// worker is about to run, whose previous worker committed there); other connectors' offsets, which this
    /// worker's running tasks may have put and not flushed yet, are kept.
    pub fn reload_connectors(
        &self,
        bootstrap: &str,
        topic: &str,
        connectors: &[String],
    ) -> Result<()> {
        let mut loaded = load_topic(bootstrap, topic)?;
        let mut offsets = self.offsets.lock().unwrap();
        let mut dirty = self.dirty.lock().unwrap();
        for c in connectors {
            match loaded.remove(c) {
                Some(m) => offsets.insert(c.clone(), m),
                None => offsets.remove(c),
            };
            dirty.retain(|(d, _)| d != c);
        }
        Ok(())
    }

    /// Whether the offsets are kept in a topic (distributed mode), where a failed write may be retried.
    pub fn is_topic(&self) -> bool {
        matches!(self.backend, Backend::Topic(_))
    }

    /// Where the offsets are kept, for messages: "the offsets file <path>" or "the offsets topic <name>".
    pub fn describe(&self) -> String {
        match &self.backend {
            Backend::File(p) => format!("the offsets file {}", p.display()),
            Backend::Topic(w) => format!("the offsets topic {}", w.topic),
        }
    }

    /// Every offset of every connector (to import a standalone file into a topic).
    pub fn all(&self) -> Vec<(String, Value, Value)> {
        let offsets = self.offsets.lock().unwrap();
        offsets
            .iter()
            .flat_map(|(c, m)| m.values().map(|(p, o)| (c.clone(), p.clone(), o.clone())))
            .collect()
    }

    /// The stored offset of `connector`'s source `partition`.
    pub fn get(&self, connector: &str, partition: &Value) -> Option<Value> {
        let offsets = self.offsets.lock().unwrap();
        offsets
            .get(connector)
            .and_then(|m| m.get(&partition.to_string()))
            .map(|(_, o)| o.clone())
    }

    /// Records `offset` for `connector`'s `partition` in memory; `flush` makes it durable.
    pub fn put(&self, connector: &str, partition: Value, offset: Value) {
        let mut offsets = self.offsets.lock().unwrap();
        offsets
            .entry(connector.to_string())
            .or_default()
            .insert(partition.to_string(), (partition.clone(), offset));
        self.dirty
            .lock()
            .unwrap()
            .insert((connector.to_string(), partition.to_string()));
    }

    /// Every offset of `connector` in KIP-875's shape: `[{"partition": {...}, "offset": {...}}]`.
    pub fn connector_offsets(&self, connector: &str) -> Vec<Value> {
        let offsets = self.offsets.lock().unwrap();
        offsets
            .get(connector)
            .into_iter()
            .flat_map(|m| m.values())
            .map(|(p, o)| json!({"partition": p, "offset": o}))
            .collect()
    }

    /// Makes what was put durable. The file: every offset, written atomically and durably (temporary file,
    /// fsync, rename, directory fsync); an error means the file still holds the previous complete snapshot. The
    /// topic: the entries put since the last flush, acknowledged by every in-sync replica; after an error they
    /// are sent again at the next flush.
    pub async fn flush(self: &Arc<Self>) -> std::result::Result<(), String> {
        let _writer = self.write_lock.lock().await;
        match &self.backend {
            Backend::File(_) => {
                let snapshot = self.offsets.lock().unwrap().clone();
                let this = self.clone();
                tokio::task::spawn_blocking(move || this.write_file(&snapshot))
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| e.to_string())
            }
            Backend::Topic(w) => {
                let dirty = std::mem::take(&mut *self.dirty.lock().unwrap());
                let records = {
                    let offsets = self.offsets.lock().unwrap();
                    dirty
                        .iter()
                        .map(|(c, p)| {
                            let entry = offsets.get(c).and_then(|m| m.get(p));
                            offset_record(c, entry.map(|(p, _)| p), p, entry.map(|(_, o)| o))
                        })
                        .collect()
                };
                let result = w.write(records).await;
                if result.is_err() {
                    self.dirty.lock().unwrap().extend(dirty);
                }
                result
            }
        }
    }

    /// Replaces `connector`'s offsets (KIP-875's PATCH and DELETE): `change` is applied to a copy, the copy is
    /// written to the file (or its changes to the topic), and only once that write succeeded does it become
    /// what `get` answers. A failed write leaves both the file and the offsets in memory as they were.
    pub async fn replace_connector(
        self: &Arc<Self>,
        connector: &str,
        change: impl FnOnce(&mut BTreeMap<String, (Value, Value)>),
    ) -> std::result::Result<(), String> {
        let _writer = self.write_lock.lock().await;
        let mut snapshot = self.offsets.lock().unwrap().clone();
        let before = snapshot.remove(connector).unwrap_or_default();
        let mut mine = before.clone();
        change(&mut mine);
        match &self.backend {
            Backend::File(_) => {
                if !mine.is_empty() {
                    snapshot.insert(connector.to_string(), mine.clone());
                }
                let this = self.clone();
                tokio::task::spawn_blocking(move || this.write_file(&snapshot))
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| e.to_string())?;
            }
            Backend::Topic(w) => {
                let mut records = Vec::new();
                for (k, (p, _)) in &before {
                    if !mine.contains_key(k) {
                        records.push(offset_record(connector, Some(p), k, None));
                    }
                }
                for (k, (p, o)) in &mine {
                    if before.get(k).map(|(_, b)| b) != Some(o) {
                        records.push(offset_record(connector, Some(p), k, Some(o)));
                    }
                }
                w.write(records).await?;
            }
        }
        // Only this connector's entries are swapped in: other connectors' tasks may have put offsets meanwhile.
        let mut offsets = self.offsets.lock().unwrap();
        if mine.is_empty() {
            offsets.remove(connector);
        } else {
            offsets.insert(connector.to_string(), mine);
        }
        Ok(())
    }

    /// Writes `offsets` as the file's complete snapshot; the caller holds `write_lock`.
    fn write_file(&self, offsets: &Offsets) -> std::io::Result<()> {
        let Backend::File(path) = &self.backend else {
            unreachable!("only a file store writes a file")
        };
        let body = {
            let entries: Vec<Value> = offsets
                .iter()
                .flat_map(|(c, m)| {
                    m.values()
                        .map(move |(p, o)| json!({"key": [c, p], "value": o}))
                })
                .collect();
            serde_json::to_vec(&entries).expect("JSON values serialise")
        };
        // `<file>.tmp`, appended rather than replacing an extension: a store named `x.tmp` must not be its own
        // temporary file.
        let mut tmp = path.clone().into_os_string();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let mut f = std::fs::File::create(&tmp)?;
        writeln!(f, "{MAGIC} {} {:08x}", body.len(), crc32c::crc32c(&body))?;
        f.write_all(&body)?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        sync_parent(path)
    }
}

/// Connect's offsets topic read to its end: the last offset of every `[connector, partition]` key.
fn load_topic(bootstrap: &str, topic: &str) -> Result<Offsets> {
    let records = crate::topics::read_all(bootstrap, topic).map_err(Error::Internal)?;
    let mut offsets = Offsets::new();
    for (key, value) in records {
        let Ok(Value::Array(key)) = serde_json::from_slice::<Value>(&key) else {
            tracing::warn!(
                topic,
                "an offsets record whose key is not [connector, partition] is skipped"
            );
            continue;
        };
        let (Some(Value::String(connector)), Some(partition)) = (key.first(), key.get(1)) else {
            tracing::warn!(
                topic,
                "an offsets record whose key is not [connector, partition] is skipped"
            );
            continue;
        };
        let offset = match value.as_deref().map(serde_json::from_slice::<Value>) {
            None | Some(Ok(Value::Null)) => None,
            Some(Ok(v)) => Some(v),
            Some(Err(e)) => {
                tracing::warn!(
                    topic,
                    connector,
                    "an offsets record whose value is not JSON is skipped: {e}"
                );
                continue;
            }
        };
        let m = offsets.entry(connector.clone()).or_default();
        match offset {
            Some(o) => {
                m.insert(partition.to_string(), (partition.clone(), o));
            }
            None => {
                m.remove(&partition.to_string());
            }
        }
    }
    offsets.retain(|_, m| !m.is_empty());
    Ok(offsets)
}

/// An offsets-topic record: the key `["<connector>", {partition}]`, the value the offset (None: a tombstone).
fn offset_record(
    connector: &str,
    partition: Option<&Value>,
    partition_text: &str,
    offset: Option<&Value>,
) -> crate::topics::Record {
    let partition = partition
        .cloned()
        .or_else(|| serde_json::from_str(partition_text).ok())
        .unwrap_or(Value::Null);
    let key = serde_json::to_vec(&json!([connector, partition])).expect("JSON serialises");
    (
        key,
        offset.map(|o| serde_json::to_vec(o).expect("JSON serialises")),
    )
}

/// Fsyncs the directory holding `path`, so that a file created or renamed there keeps its name after a power loss
/// (an fsync of the file itself makes only its bytes durable).
pub(crate) fn sync_parent(path: &Path) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::File::open(dir)?.sync_all()
}

fn parse(bytes: &[u8]) -> std::result::Result<Offsets, String> {
    if bytes.is_empty() {
        return Err("it is empty (a write torn by a crash, or not written by Fjord)".into());
    }
    if bytes.starts_with(&[0xac, 0xed]) {
        return Err("it is a Java-serialized file, written by Apache Kafka's connect-standalone, which Fjord cannot read".into());
    }
    let nl = bytes
        .iter()
        .position(|b| *b == b'\n')
        .ok_or("it has no header line (torn or foreign)")?;
    let header =
        std::str::from_utf8(&bytes[..nl]).map_err(|_| "its header is not text (foreign file)")?;
    let rest = header
        .strip_prefix(MAGIC)
        .ok_or_else(|| format!("it does not start with `{MAGIC}` (not written by Fjord)"))?;
    let mut fields = rest.split_whitespace();
    let len: usize = fields
        .next()
        .and_then(|l| l.parse().ok())
        .ok_or("its header has no length")?;
    let crc = fields
        .next()
        .and_then(|c| u32::from_str_radix(c, 16).ok())
        .ok_or("its header has no checksum")?;
    let body = &bytes[nl + 1..];
    if body.len() < len {
        return Err(format!(
            "it is torn: the header announces {len} bytes, the file holds {}",
            body.len()
        ));
    }
    let body = &body[..len];
    if crc32c::crc32c(body) != crc {
        return Err("its checksum does not match its contents (corrupted)".into());
    }
    let entries: Vec<Value> =
        serde_json::from_slice(body).map_err(|e| format!("its contents are not valid: {e}"))?;
    let mut offsets = Offsets::new();
    for e in entries {
        let (Some(connector), Some(partition), Some(offset)) =
            (e["key"][0].as_str(), e["key"].get(1), e.get("value"))
        else {
            return Err(format!(
                "an entry is not [connector, partition] => offset: {e}"
            ));
        };
        offsets
            .entry(connector.to_string())
            .or_default()
            .insert(partition.to_string(), (partition.clone(), offset.clone()));
    }
    Ok(offsets)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn offsets_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("offsets");
        let s = Arc::new(OffsetStore::open(&path).unwrap());
        assert_eq!(s.get("c", &json!({"filename": "/a"})), None);
        s.put("c", json!({"filename": "/a"}), json!({"position": 10}));
        s.put("c", json!({"filename": "/a"}), json!({"position": 42}));
        s.put("d", json!({"filename": "/b"}), json!({"position": 7}));
        s.flush().await.unwrap();
        let s = Arc::new(OffsetStore::open(&path).unwrap());
        assert_eq!(
            s.get("c", &json!({"filename": "/a"})),
            Some(json!({"position": 42}))
        );
        assert_eq!(
            s.connector_offsets("d"),
            vec![json!({"partition": {"filename": "/b"}, "offset": {"position": 7}})]
        );
        assert!(!dir.path().join("offsets.tmp").exists());
        // A store whose name ends like a temporary file still writes through a separate one.
        let odd = Arc::new(OffsetStore::open(&dir.path().join("x.tmp")).unwrap());
        odd.put("c", json!({"filename": "/a"}), json!({"position": 1}));
        odd.flush().await.unwrap();
        assert!(dir.path().join("x.tmp").exists() && !dir.path().join("x.tmp.tmp").exists());
        assert_eq!(
            OffsetStore::open(&dir.path().join("x.tmp"))
                .unwrap()
                .get("c", &json!({"filename": "/a"})),
            Some(json!({"position": 1}))
        );
    }

    #[tokio::test]
    async fn a_torn_empty_or_foreign_file_is_reported_not_reset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("offsets");
        let s = Arc::new(OffsetStore::open(&path).unwrap());
        s.put("c", json!({"filename": "/a"}), json!({"position": 10}));
        s.flush().await.unwrap();
        let whole = std::fs::read(&path).unwrap();
        for (bytes, why) in [
            (whole[..whole.len() - 5].to_vec(), "torn"),
            (Vec::new(), "empty"),
            (vec![0xac, 0xed, 0, 5], "Java-serialized"),
            (b"{}".to_vec(), "header"),
        ] {
            std::fs::write(&path, &bytes).unwrap();
            let e = OffsetStore::open(&path)
                .err()
                .expect("a damaged file must not open");
            let msg = e.to_string();
            assert!(
                msg.contains(why) && msg.contains("move it aside"),
                "{why}: {msg}"
            );
        }
        let mut flipped = whole.clone();
        let last = flipped.len() - 3;
        flipped[last] ^= 0x01;
        std::fs::write(&path, &flipped).unwrap();
        let e = OffsetStore::open(&path).err().unwrap().to_string();
        assert!(e.contains("checksum") || e.contains("not valid"), "{e}");
    }
}
