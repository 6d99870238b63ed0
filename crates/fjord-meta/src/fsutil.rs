//! Small durable-file helpers shared by the log store and the state machine.
//!
//! Every file that is replaced as a whole (vote, committed id, purge marker, snapshot) goes through
//! [`write_atomic`]: a reader after a crash sees either the old or the new content, never a mix.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Writes `bytes` to `path` via a temporary sibling, fsyncs it, renames it over `path` and fsyncs
/// the directory so that the rename itself survives a power loss.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    sync_parent(path)
}

/// Serializes `value` as JSON and writes it with [`write_atomic`].
pub(crate) fn write_json_atomic<T: Serialize>(path: &Path, value: &T) -> io::Result<()> {
    let bytes = serde_json::to_vec(value).map_err(io::Error::other)?;
    write_atomic(path, &bytes)
}

/// Reads a JSON file written by [`write_json_atomic`]; a missing file is `None`. A file that does
/// not parse is an error rather than `None`: atomic writes never leave half a file, so garbage
/// means corruption and silently forgetting a vote or a snapshot would break raft's guarantees.
pub(crate) fn read_json<T: DeserializeOwned>(path: &Path) -> io::Result<Option<T>> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {e}", path.display()),
            )
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Fsyncs the directory holding `path`, which makes a create or rename of `path` durable.
pub(crate) fn sync_parent(path: &Path) -> io::Result<()> {
    match path.parent() {
        // Opening a directory for fsync works on Unix; elsewhere directory entries are durable
        // with the file itself, so a failure to open is not an error worth surfacing.
        Some(dir) => match File::open(dir) {
            Ok(d) => d
                .sync_all()
                .or_else(|e| if cfg!(unix) { Err(e) } else { Ok(()) }),
            Err(e) if cfg!(unix) => Err(e),
            Err(_) => Ok(()),
        },
        None => Ok(()),
    }
}
