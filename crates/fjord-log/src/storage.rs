//! The file operations fjord-log performs, behind a trait, so that tests can run the real log code over a
//! simulated disk that fails writes and fsyncs, tears writes, and loses everything not yet fsynced at a "power
//! loss" ([`crate::sim::SimStorage`], feature `fault-injection`). [`Disk`] is the real thing: `std::fs` with
//! positional reads and writes.
//!
//! The trait is deliberately small and explicit about durability: data reaches the disk only through
//! [`FileHandle::sync_data`] / [`FileHandle::sync_all`], and a directory's entries (files created, renamed or
//! removed in it) only through [`Storage::sync_dir`].

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

/// How to open a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Open {
    /// An existing file, for reading and writing.
    Existing,
    /// Create the file, or empty an existing one.
    Truncate,
    /// Create the file if missing, keep its contents otherwise.
    Create,
}

/// An open file. Reads and writes are positional, so `&self` suffices and no cursor is shared.
#[allow(clippy::len_without_is_empty)]
pub trait FileHandle: Send + Sync {
    fn read_exact_at(&self, buf: &mut [u8], pos: u64) -> io::Result<()>;
    fn write_all_at(&self, buf: &[u8], pos: u64) -> io::Result<()>;
    fn set_len(&self, len: u64) -> io::Result<()>;
    fn len(&self) -> io::Result<u64>;
    fn sync_data(&self) -> io::Result<()>;
    fn sync_all(&self) -> io::Result<()>;
    /// Last modification time in ms since the epoch, if known (retention of segments without timestamps).
    fn modified_ms(&self) -> Option<i64>;
}

/// A file system, as much of it as the log needs.
pub trait Storage: Send + Sync {
    fn open(&self, path: &Path, how: Open) -> io::Result<Arc<dyn FileHandle>>;
    /// The whole contents of a (small) file.
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    fn remove_dir_all(&self, path: &Path) -> io::Result<()>;
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Names of the entries of a directory.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Makes the directory's entries durable (files created, renamed or removed in it).
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    fn exists(&self, path: &Path) -> bool;
    /// Whether `path` exists, without following a final symlink; an error other than "not found" (a directory
    /// that cannot be searched) is returned, not taken for absence.
    fn try_exists(&self, path: &Path) -> io::Result<bool> {
        Ok(self.exists(path))
    }
}

/// The real disk.
#[derive(Clone, Copy, Debug, Default)]
pub struct Disk;

impl FileHandle for File {
    fn read_exact_at(&self, buf: &mut [u8], pos: u64) -> io::Result<()> {
        FileExt::read_exact_at(self, buf, pos)
    }
    fn write_all_at(&self, buf: &[u8], pos: u64) -> io::Result<()> {
        FileExt::write_all_at(self, buf, pos)
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        File::set_len(self, len)
    }
    fn len(&self) -> io::Result<u64> {
        Ok(self.metadata()?.len())
    }
    fn sync_data(&self) -> io::Result<()> {
        File::sync_data(self)
    }
    fn sync_all(&self) -> io::Result<()> {
        File::sync_all(self)
    }
    fn modified_ms(&self) -> Option<i64> {
        self.metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_millis() as i64)
    }
}

impl Storage for Disk {
    fn open(&self, path: &Path, how: Open) -> io::Result<Arc<dyn FileHandle>> {
        let mut o = OpenOptions::new();
        o.read(true).write(true);
        match how {
            Open::Existing => {}
            Open::Truncate => {
                o.create(true).truncate(true);
            }
            Open::Create => {
                o.create(true);
            }
        }
        Ok(Arc::new(o.open(path)?))
    }
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        fs::read(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }
    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        fs::remove_dir_all(path)
    }
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        fs::create_dir_all(path)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(dir)? {
            if let Some(name) = entry?.file_name().to_str() {
                out.push(name.to_string());
            }
        }
        Ok(out)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }
    fn try_exists(&self, path: &Path) -> io::Result<bool> {
        match fs::symlink_metadata(path) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// Reads a small file; `None` when it does not exist.
pub fn read_optional(storage: &dyn Storage, path: &Path) -> io::Result<Option<Vec<u8>>> {
    match storage.read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Removes a file; a missing one is fine.
pub fn remove_if_exists(storage: &dyn Storage, path: &Path) -> io::Result<()> {
    match storage.remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Writes a file atomically: temporary file, fsync, rename, fsync of the directory. A crash leaves the old
/// contents or the new, never a mix.
pub fn write_atomic(storage: &dyn Storage, path: &Path, contents: &[u8]) -> io::Result<()> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = path.with_file_name(format!("{name}.tmp"));
    {
        let f = storage.open(&tmp, Open::Truncate)?;
        f.write_all_at(contents, 0)?;
        f.sync_all()?;
    }
    storage.rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        storage.sync_dir(dir)?;
    }
    Ok(())
}

/// Sequential buffered writes through a [`FileHandle`] (the cleaner writes whole segments this way).
pub(crate) struct FileWriter {
    file: Arc<dyn FileHandle>,
    pos: u64,
    buf: Vec<u8>,
}

impl FileWriter {
    const CHUNK: usize = 1 << 20;

    pub(crate) fn new(file: Arc<dyn FileHandle>) -> FileWriter {
        FileWriter {
            file,
            pos: 0,
            buf: Vec::new(),
        }
    }

    pub(crate) fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.buf.extend_from_slice(bytes);
        if self.buf.len() >= Self::CHUNK {
            self.flush_buf()?;
        }
        Ok(())
    }

    fn flush_buf(&mut self) -> io::Result<()> {
        self.file.write_all_at(&self.buf, self.pos)?;
        self.pos += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }

    /// Writes what is buffered and fsyncs the file.
    pub(crate) fn finish_synced(mut self) -> io::Result<()> {
        self.flush_buf()?;
        self.file.sync_all()
    }
}
