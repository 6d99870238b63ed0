//! The broker's log directories (`log.dirs`) and what happens when one of them fails: Kafka's
//! `LogDirFailureChannel`.
//!
//! An I/O error from any partition operation (append, fsync, read, retention, compaction, snapshots, open) is a
//! fact about the disk, not a glitch to retry: the directory the partition lives in goes offline for the rest of
//! this process's life. From then on every partition in it answers KAFKA_STORAGE_ERROR and none of its files is
//! written again (no housekeeping, no flush, no clean-shutdown marker), so that a failed fsync is never retried
//! into a false success ("fsyncgate") and the next start recovers those logs. The other directories keep
//! serving. The directory that holds the metadata quorum (`__meta`, in the first log dir, as Kafka's
//! `metadata.log.dir` defaults to) cannot be lost that way: its failure stops the broker, as Kafka does.
//!
//! Each directory is locked (`.lock`, an exclusive `flock`, with the holder's pid written in it) for as long as
//! the broker runs, so that a second process never opens, "recovers" and serves the same logs.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use fjord_log::storage::{Disk, Storage};

use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::watch;

use crate::metrics::{LogDirLabels, Metrics};
use crate::{Error, Result};

/// Kafka's name for the lock file in every log directory.
pub const LOCK_FILE: &str = ".lock";

/// Suffix of a partition directory renamed for deletion (Kafka's `DeleteDirSuffix`).
pub const DELETE_DIR_SUFFIX: &str = "-delete";

struct LogDir {
    path: PathBuf,
    /// Set once, by the first I/O error; never cleared by this process (a restart re-checks the disk).
    offline: AtomicBool,
    /// Partitions open in this directory (for placement and the offline-partitions gauge).
    hosted: AtomicI64,
    /// The locked `.lock` file, held from [`LogDirs::lock_all`] to [`LogDirs::unlock_all`].
    lock: Mutex<Option<File>>,
}

/// Every configured log directory, in `log.dirs` order, and their online/offline state.
pub struct LogDirs {
    dirs: Vec<LogDir>,
    /// Partitions this broker should host but could not open (bad `partition.metadata`, open failed, directory
    /// offline at open time); kept by the partition manager, counted in the offline-partitions gauge.
    unopened: AtomicI64,
    dir_offline: Family<LogDirLabels, Gauge>,
    offline_partitions: Gauge,
    /// `fjord_log_flush_seconds`: every partition's fsyncs.
    flush_seconds: prometheus_client::metrics::histogram::Histogram,
    /// Set when the directory holding the metadata quorum fails: the broker must stop.
    fatal: watch::Sender<Option<String>>,
    /// The file system every partition operation goes through: the real disk, or a simulated one in the
    /// broker's fault harness.
    storage: Arc<dyn Storage>,
}

impl LogDirs {
    /// Records one fsync's duration (`fjord_log_flush_seconds`).
    pub fn observe_flush(&self, took: std::time::Duration) {
        self.flush_seconds.observe(took.as_secs_f64());
    }

    /// Creates the directories if needed (no lock taken yet; see [`LogDirs::lock_all`]). As in Kafka, a
    /// directory that cannot be created or read starts offline, unless it is the first one (it holds the metadata
    /// quorum): then the broker cannot start.
    pub fn new(paths: &[PathBuf], metrics: &Metrics) -> Result<LogDirs> {
        LogDirs::with_storage(paths, metrics, Arc::new(Disk))
    }

    /// [`LogDirs::new`] over another file system (the simulated disk of the fault harness).
    pub fn with_storage(
        paths: &[PathBuf],
        metrics: &Metrics,
        storage: Arc<dyn Storage>,
    ) -> Result<LogDirs> {
        assert!(!paths.is_empty(), "log.dirs is validated non-empty");
        let mut dirs = Vec::with_capacity(paths.len());
        let mut failed = Vec::new();
        for (i, p) in paths.iter().enumerate() {
            if let Err(e) = create_dir(&*storage, p) {
                if i == 0 {
                    return Err(Error::Storage(format!(
                        "cannot use log directory {} (it holds the metadata quorum): {e}",
                        p.display()
                    )));
                }
                failed.push((i, e));
            }
            metrics
                .log_dir_offline
                .get_or_create(&LogDirLabels::new(p))
                .set(0);
            dirs.push(LogDir {
                path: p.clone(),
                offline: AtomicBool::new(false),
                hosted: AtomicI64::new(0),
                lock: Mutex::new(None),
            });
        }
        let dirs = LogDirs {
            dirs,
            unopened: AtomicI64::new(0),
            dir_offline: metrics.log_dir_offline.clone(),
            offline_partitions: metrics.offline_partitions.clone(),
            flush_seconds: metrics.log_flush.clone(),
            fatal: watch::channel(None).0,
            storage,
        };
        for (i, e) in failed {
            dirs.fail(
                i,
                &format_args!("cannot create or read it at start-up: {e}"),
            );
        }
        Ok(dirs)
    }

    /// The file system the partitions' files live on.
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    pub fn len(&self) -> usize {
        self.dirs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.dirs.is_empty()
    }

    pub fn path(&self, index: usize) -> &Path {
        &self.dirs[index].path
    }

    /// The directory that holds the metadata quorum (`__meta`): the first one.
    pub fn metadata_dir(&self) -> &Path {
        self.path(0)
    }

    pub fn is_offline(&self, index: usize) -> bool {
        self.dirs[index].offline.load(Ordering::Acquire)
    }

    pub fn any_offline(&self) -> bool {
        (0..self.dirs.len()).any(|i| self.is_offline(i))
    }

    /// Takes directory `index` offline after `error` (the first report wins; later ones are only logged at
    /// debug level). Its partitions answer KAFKA_STORAGE_ERROR from now on and are never written again.
    pub fn fail(&self, index: usize, error: &dyn std::fmt::Display) {
        let dir = &self.dirs[index];
        if dir.offline.swap(true, Ordering::AcqRel) {
            tracing::debug!(dir = %dir.path.display(), %error, "further I/O error in an offline log directory");
            return;
        }
        tracing::error!(
            dir = %dir.path.display(),
            %error,
            "I/O error: log directory is now OFFLINE; its partitions answer KAFKA_STORAGE_ERROR and are not \
             written again by this process. Check the disk (dmesg, SMART), fix or replace it, then restart the \
             broker: the logs in it are recovered at start-up"
        );
        self.dir_offline
            .get_or_create(&LogDirLabels::new(&dir.path))
            .set(1);
        self.refresh_gauge();
        if index == 0 {
            let msg = format!(
                "the log directory holding the metadata quorum ({}) failed: {error}; stopping the broker",
                dir.path.display()
            );
            tracing::error!("{msg}");
            self.fatal.send_replace(Some(msg));
        }
    }

    /// Resolves when a failure requires the broker to stop (the metadata directory went offline); the message
    /// says why.
    pub async fn fatal(&self) -> String {
        let mut rx = self.fatal.subscribe();
        loop {
            if let Some(m) = rx.borrow_and_update().clone() {
                return m;
            }
            if rx.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
    }

    pub(crate) fn hosted(&self, index: usize) -> i64 {
        self.dirs[index].hosted.load(Ordering::Relaxed)
    }

    pub(crate) fn add_hosted(&self, index: usize, delta: i64) {
        self.dirs[index].hosted.fetch_add(delta, Ordering::Relaxed);
        self.refresh_gauge();
    }

    pub(crate) fn set_unopened(&self, n: usize) {
        self.unopened.store(n as i64, Ordering::Relaxed);
        self.refresh_gauge();
    }

    fn refresh_gauge(&self) {
        let in_offline_dirs: i64 = self
            .dirs
            .iter()
            .filter(|d| d.offline.load(Ordering::Acquire))
            .map(|d| d.hosted.load(Ordering::Relaxed))
            .sum();
        self.offline_partitions
            .set(in_offline_dirs + self.unopened.load(Ordering::Relaxed));
    }

    /// Takes the exclusive lock of every directory, writing this process's pid into `.lock`. Fails, naming the
    /// directory and the holder's pid, when another process holds one.
    /// A directory that cannot be locked for another reason than another holder (an I/O error) goes offline,
    /// unless it is the first.
    pub fn lock_all(&self) -> Result<()> {
        for (i, d) in self.dirs.iter().enumerate() {
            if self.is_offline(i) {
                continue;
            }
            match lock_dir(&d.path) {
                Ok(file) => *d.lock.lock().unwrap_or_else(|p| p.into_inner()) = Some(file),
                Err(e @ Error::Storage(_)) => return Err(e),
                Err(e) if i == 0 => return Err(e),
                Err(e) => self.fail(i, &format_args!("cannot lock it at start-up: {e}")),
            }
        }
        Ok(())
    }

    /// Releases the locks (clean shutdown), so that a broker started again in this process may take them.
    pub fn unlock_all(&self) {
        for d in &self.dirs {
            if let Some(f) = d.lock.lock().unwrap_or_else(|p| p.into_inner()).take() {
                let _ = f.unlock();
            }
        }
    }

    /// Removes partition directories renamed for deletion (`…-delete`) that an earlier run left behind, in every
    /// online directory. Failures are logged; the next start tries again.
    pub fn remove_deleted_leftovers(&self) {
        for (i, d) in self.dirs.iter().enumerate() {
            if self.is_offline(i) {
                continue;
            }
            let names = match self.storage.list(&d.path) {
                Ok(e) => e,
                Err(e) => {
                    self.fail(i, &e);
                    continue;
                }
            };
            for name in names {
                if is_delete_dir_name(&name) {
                    let path = d.path.join(&name);
                    tracing::info!(dir = %path.display(), "removing a partition directory left from a deletion");
                    if let Err(e) = self.storage.remove_dir_all(&path) {
                        tracing::warn!(dir = %path.display(), error = %e, "cannot remove a deleted partition directory");
                    }
                }
            }
        }
    }
}

/// Creates a log directory (and makes its entry durable in the parent) unless it exists; checks it is a
/// readable directory.
fn create_dir(storage: &dyn Storage, p: &Path) -> std::io::Result<()> {
    if !storage.try_exists(p)? {
        storage.create_dir_all(p)?;
        if let Some(parent) = p.parent().filter(|p| !p.as_os_str().is_empty()) {
            storage.sync_dir(parent)?;
        }
    }
    storage.list(p).map(|_| ())
}

/// Opens and locks `<dir>/.lock` and writes our pid into it.
fn lock_dir(dir: &Path) -> Result<File> {
    let path = dir.join(LOCK_FILE);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            let pid = if holder.is_empty() {
                "unknown pid".to_string()
            } else {
                format!("pid {holder}")
            };
            return Err(Error::Storage(format!(
                "log directory {} is in use by another process ({pid}, holding {}); stop that broker or point \
                 log.dirs at another directory",
                dir.display(),
                path.display()
            )));
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(e.into()),
    }
    file.set_len(0)?;
    file.rewind()?;
    writeln!(file, "{}", std::process::id())?;
    Ok(file)
}

/// Kafka's name for a partition directory renamed for asynchronous deletion (`LocalLog.logDeleteDirName`):
/// `<topic>-<partition>.<uuid without dashes>-delete`, the topic cut so that the name stays within 255 bytes.
pub fn delete_dir_name(topic: &str, partition: i32) -> String {
    let unique = uuid::Uuid::new_v4().simple().to_string();
    let suffix = format!("-{partition}.{unique}{DELETE_DIR_SUFFIX}");
    // Topic names are ASCII (validated), so cutting at a byte index is a char boundary.
    let keep = topic.len().min(255 - suffix.len());
    format!("{}{suffix}", &topic[..keep])
}

/// Whether `name` is a directory renamed by [`delete_dir_name`]: `<topic>-<digits>.<32 hex>-delete`. A live
/// partition directory always ends in its partition number, so it can never match.
pub fn is_delete_dir_name(name: &str) -> bool {
    let Some(rest) = name.strip_suffix(DELETE_DIR_SUFFIX) else {
        return false;
    };
    let Some((head, unique)) = rest.rsplit_once('.') else {
        return false;
    };
    let Some((_, partition)) = head.rsplit_once('-') else {
        return false;
    };
    unique.len() == 32
        && unique.bytes().all(|b| b.is_ascii_hexdigit())
        && !partition.is_empty()
        && partition.bytes().all(|b| b.is_ascii_digit())
}

/// Renames the partition directory `dir` (in log directory `parent`) to its `-delete` name and fsyncs the
/// parent, so that from then on nothing can reach the old data under the live name; returns the new path.
pub(crate) fn rename_for_delete(
    storage: &dyn Storage,
    parent: &Path,
    dir: &Path,
    topic: &str,
    partition: i32,
) -> std::io::Result<PathBuf> {
    let to = parent.join(delete_dir_name(topic, partition));
    storage.rename(dir, &to)?;
    storage.sync_dir(parent)?;
    Ok(to)
}

/// Removes a directory renamed by [`rename_for_delete`] on a background thread: it may be large, and whatever
/// is left is removed at the next start.
pub(crate) fn remove_in_background(storage: &Arc<dyn Storage>, path: PathBuf) {
    let storage = Arc::clone(storage);
    let spawned = std::thread::Builder::new()
        .name("fjord-delete-dir".into())
        .spawn(move || {
            if let Err(e) = storage.remove_dir_all(&path) {
                tracing::warn!(dir = %path.display(), error = %e, "cannot remove a deleted partition directory; the next start retries");
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the directory-removal thread; the next start removes it");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delete_dir_names_follow_kafka_and_never_match_live_partitions() {
        let n = delete_dir_name("orders", 3);
        assert!(n.starts_with("orders-3.") && n.ends_with("-delete"), "{n}");
        assert_eq!(n.len(), "orders-3.".len() + 32 + "-delete".len());
        assert!(is_delete_dir_name(&n));
        assert!(!is_delete_dir_name("orders-3"));
        assert!(!is_delete_dir_name("x-delete-0"));
        assert!(!is_delete_dir_name("__meta"));
        let long = "t".repeat(249);
        let n = delete_dir_name(&long, 12);
        assert_eq!(n.len(), 255);
        assert!(is_delete_dir_name(&n));
    }

    #[test]
    fn a_second_lock_on_a_log_dir_is_refused_with_the_holders_pid() {
        let dir = tempfile::tempdir().unwrap();
        let m = Metrics::new();
        let first = LogDirs::new(&[dir.path().to_path_buf()], &m).unwrap();
        first.lock_all().unwrap();
        let second = LogDirs::new(&[dir.path().to_path_buf()], &m).unwrap();
        let err = second.lock_all().unwrap_err().to_string();
        assert!(err.contains(&dir.path().display().to_string()), "{err}");
        assert!(
            err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        first.unlock_all();
        second.lock_all().unwrap();
    }

    #[test]
    fn a_log_dir_that_cannot_be_created_starts_offline_unless_it_holds_metadata() {
        let root = tempfile::tempdir().unwrap();
        let not_a_dir = root.path().join("file");
        std::fs::write(&not_a_dir, b"x").unwrap();
        let good = root.path().join("good");
        let m = Metrics::new();
        let dirs = LogDirs::new(&[good.clone(), not_a_dir.clone()], &m).unwrap();
        dirs.lock_all().unwrap();
        assert!(!dirs.is_offline(0) && dirs.is_offline(1));
        assert!(good.join(LOCK_FILE).exists());
        let text = m.encode();
        assert!(
            text.contains(&format!(
                "fjord_log_dir_offline{{dir=\"{}\"}} 1",
                not_a_dir.display()
            )),
            "{text}"
        );
        let err = LogDirs::new(&[not_a_dir.clone(), good], &m).err().unwrap();
        assert!(
            err.to_string().contains(&not_a_dir.display().to_string()),
            "{err}"
        );
    }
}
