//! The leader epoch cache (Kafka's `LeaderEpochFileCache`, KIP-101/KIP-279): for each leader epoch that wrote
//! to this log, the first offset it wrote. It answers OffsetForLeaderEpoch ("where did epoch N end?"), which a
//! follower uses to find where its log diverges from a new leader's, and a consumer (KIP-320) to detect that the
//! log it was reading was truncated under it.
//!
//! Kept in `leader-epoch-checkpoint` in Kafka's text layout (a version line `0`, a count line, then
//! `<epoch> <start offset>` lines), rewritten atomically (temporary file, fsync, rename, directory fsync) when an
//! epoch is added or entries are removed; a new epoch is rare (a leader change), so this costs nothing on the
//! append path. **Invariant:** epochs and start offsets both strictly increase, and each entry's start offset
//! is the base offset of a batch written in that epoch (or the log start, once the entries before it were cut).
//! The file is trusted only where the log itself is (below the recovery point): recovery re-derives the
//! entries of every segment it re-validates from the batches' own epochs and drops entries at or beyond the
//! recovered log end.

use std::io;
use std::path::Path;

use crate::storage::{self as st, Storage};

/// File name in the partition directory (Kafka's).
pub(crate) const FILE: &str = "leader-epoch-checkpoint";

/// Kafka's "no epoch" / "no offset" answer of OffsetForLeaderEpoch.
pub const UNDEFINED_EPOCH: i32 = -1;
pub const UNDEFINED_OFFSET: i64 = -1;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct EpochCache {
    /// (epoch, start offset), both strictly increasing.
    entries: Vec<(i32, i64)>,
}

impl EpochCache {
    /// Reads the checkpoint: `Ok(None)` when it is missing or unreadable (the caller rebuilds from the log).
    pub(crate) fn load(fs: &dyn Storage, dir: &Path) -> io::Result<Option<EpochCache>> {
        let Some(bytes) = st::read_optional(fs, &dir.join(FILE))? else {
            return Ok(None);
        };
        let parsed = std::str::from_utf8(&bytes).ok().and_then(parse);
        if parsed.is_none() {
            tracing::warn!(dir = %dir.display(), "unreadable {FILE}; rebuilding it from the log");
        }
        Ok(parsed)
    }

    pub(crate) fn persist(&self, fs: &dyn Storage, dir: &Path) -> io::Result<()> {
        let mut text = format!("0\n{}\n", self.entries.len());
        for (epoch, start) in &self.entries {
            text.push_str(&format!("{epoch} {start}\n"));
        }
        st::write_atomic(fs, &dir.join(FILE), text.as_bytes())
    }

    pub(crate) fn entries(&self) -> &[(i32, i64)] {
        &self.entries
    }

    pub(crate) fn latest(&self) -> Option<(i32, i64)> {
        self.entries.last().copied()
    }

    /// Records that `epoch` wrote a batch starting at `offset`. Only a newer epoch adds an entry (a batch of the
    /// latest epoch, or an older one, changes nothing); an entry at or beyond `offset` of an older epoch cannot
    /// exist in a consistent log and is dropped first, as Kafka does. Negative epochs (batches from before
    /// epochs were recorded) are ignored. Returns whether the entries changed.
    pub(crate) fn assign(&mut self, epoch: i32, offset: i64) -> bool {
        if epoch < 0 {
            return false;
        }
        if let Some((latest, _)) = self.latest() {
            if epoch <= latest {
                return false;
            }
        }
        let before = self.entries.len();
        self.entries.retain(|(_, start)| *start < offset);
        let removed = self.entries.len() != before;
        if removed {
            tracing::warn!(
                epoch,
                offset,
                "leader epoch entries at or after a newer epoch's start offset removed"
            );
        }
        self.entries.push((epoch, offset));
        true
    }

    /// The log was truncated to `end` (exclusive): epochs that started at or after it are gone.
    pub(crate) fn truncate_from_end(&mut self, end: i64) -> bool {
        let before = self.entries.len();
        self.entries.retain(|(_, start)| *start < end);
        self.entries.len() != before
    }

    /// The log now starts at `start`: entries wholly before it go, and the one covering it starts there.
    pub(crate) fn truncate_from_start(&mut self, start: i64) -> bool {
        let covering = self.entries.partition_point(|(_, s)| *s <= start);
        if covering == 0 {
            return false;
        }
        let changed = covering > 1 || self.entries[0].1 != start;
        self.entries.drain(..covering - 1);
        self.entries[0].1 = start;
        changed
    }

    /// Everything goes (the log was emptied and restarts at a new offset).
    pub(crate) fn clear(&mut self) -> bool {
        let changed = !self.entries.is_empty();
        self.entries.clear();
        changed
    }

    /// OffsetForLeaderEpoch for `requested`, Kafka's `endOffsetFor`: the largest epoch at or below it that this
    /// log knows, with the offset where that epoch ended (the start of the next epoch, or `log_end` for the
    /// latest). Undefined (-1, -1) when `requested` is newer than every epoch here or the log has none; when it
    /// is older than every epoch here, `requested` with the start of the oldest one.
    pub(crate) fn end_offset_for(&self, requested: i32, log_end: i64) -> (i32, i64) {
        if requested == UNDEFINED_EPOCH {
            return (UNDEFINED_EPOCH, UNDEFINED_OFFSET);
        }
        match self.latest() {
            None => (UNDEFINED_EPOCH, UNDEFINED_OFFSET),
            Some((latest, _)) if latest == requested => (requested, log_end),
            Some(_) => {
                let higher = self.entries.partition_point(|(e, _)| *e <= requested);
                match (higher.checked_sub(1), self.entries.get(higher)) {
                    (_, None) => (UNDEFINED_EPOCH, UNDEFINED_OFFSET),
                    (None, Some((_, next_start))) => (requested, *next_start),
                    (Some(floor), Some((_, next_start))) => (self.entries[floor].0, *next_start),
                }
            }
        }
    }

    /// The epoch that wrote `offset`, as far as the entries tell.
    pub(crate) fn epoch_at(&self, offset: i64) -> Option<i32> {
        let i = self.entries.partition_point(|(_, s)| *s <= offset);
        i.checked_sub(1).map(|i| self.entries[i].0)
    }
}

fn parse(text: &str) -> Option<EpochCache> {
    let mut lines = text.lines().map(str::trim);
    if lines.next()? != "0" {
        return None;
    }
    let count: usize = lines.next()?.parse().ok()?;
    let mut entries = Vec::with_capacity(count.min(1024));
    for _ in 0..count {
        let mut it = lines.next()?.split_whitespace();
        let epoch: i32 = it.next()?.parse().ok()?;
        let start: i64 = it.next()?.parse().ok()?;
        if it.next().is_some() || epoch < 0 || start < 0 {
            return None;
        }
        if let Some((e, s)) = entries.last() {
            if epoch <= *e || start <= *s {
                return None;
            }
        }
        entries.push((epoch, start));
    }
    if lines.any(|l| !l.is_empty()) {
        return None;
    }
    Some(EpochCache { entries })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::SimStorage;

    fn cache(entries: &[(i32, i64)]) -> EpochCache {
        EpochCache {
            entries: entries.to_vec(),
        }
    }

    #[test]
    fn end_offsets_follow_kafkas_end_offset_for() {
        let c = cache(&[(1, 0), (3, 10), (6, 25)]);
        assert_eq!(
            c.end_offset_for(6, 40),
            (6, 40),
            "the latest epoch ends at the log end"
        );
        assert_eq!(c.end_offset_for(3, 40), (3, 25));
        assert_eq!(c.end_offset_for(1, 40), (1, 10));
        assert_eq!(
            c.end_offset_for(4, 40),
            (3, 25),
            "an epoch this log never saw: the one before it, ending where the next began"
        );
        assert_eq!(
            c.end_offset_for(0, 40),
            (0, 0),
            "older than all: the oldest's start"
        );
        assert_eq!(c.end_offset_for(7, 40), (UNDEFINED_EPOCH, UNDEFINED_OFFSET));
        assert_eq!(
            c.end_offset_for(-1, 40),
            (UNDEFINED_EPOCH, UNDEFINED_OFFSET)
        );
        assert_eq!(
            EpochCache::default().end_offset_for(0, 0),
            (UNDEFINED_EPOCH, UNDEFINED_OFFSET)
        );
        assert_eq!(c.epoch_at(9), Some(1));
        assert_eq!(c.epoch_at(10), Some(3));
        assert_eq!(c.epoch_at(100), Some(6));
    }

    #[test]
    fn assign_and_truncate_keep_both_columns_increasing() {
        let mut c = EpochCache::default();
        assert!(c.assign(2, 0));
        assert!(!c.assign(2, 5), "same epoch: no entry");
        assert!(!c.assign(1, 7), "older epoch: ignored");
        assert!(!c.assign(-1, 8), "no epoch");
        assert!(c.assign(4, 10));
        assert!(c.assign(5, 20));
        assert_eq!(c.entries(), &[(2, 0), (4, 10), (5, 20)]);
        // A newer epoch starting below existing entries replaces them (a follower truncated and refetched).
        assert!(c.assign(7, 15));
        assert_eq!(c.entries(), &[(2, 0), (4, 10), (7, 15)]);
        assert!(c.truncate_from_end(15));
        assert!(!c.truncate_from_end(15));
        assert_eq!(c.entries(), &[(2, 0), (4, 10)]);
        assert!(c.truncate_from_start(12));
        assert_eq!(c.entries(), &[(4, 12)]);
        assert!(!c.truncate_from_start(12));
        assert!(
            !c.truncate_from_start(3),
            "a start below every entry changes nothing"
        );
        assert!(c.clear());
        assert!(c.entries().is_empty());
    }

    #[test]
    fn the_checkpoint_round_trips_and_damage_reads_as_missing() {
        let fs = SimStorage::new(3);
        let dir = Path::new("/p");
        fs.create_dir_all(dir).unwrap();
        assert_eq!(EpochCache::load(&fs, dir).unwrap(), None);
        let c = cache(&[(0, 0), (3, 17)]);
        c.persist(&fs, dir).unwrap();
        assert_eq!(
            String::from_utf8(fs.read(&dir.join(FILE)).unwrap()).unwrap(),
            "0\n2\n0 0\n3 17\n",
            "Kafka's layout"
        );
        assert_eq!(EpochCache::load(&fs, dir).unwrap(), Some(c));
        for damage in [
            "",
            "0\n",
            "1\n0\n",
            "0\n2\n0 0\n",
            "0\n2\n3 0\n2 5\n",
            "0\n1\n0 x\n",
            "0\n1\n0 0\nextra\n",
        ] {
            fs.put_durable(&dir.join(FILE), damage.as_bytes());
            assert_eq!(
                EpochCache::load(&fs, dir).unwrap(),
                None,
                "{damage:?} must not be trusted"
            );
        }
    }
}
