//! Window definitions and the pure rules of windowing: which windows a timestamp falls in, when a window
//! closes, how sessions merge. The operators in `runtime` apply these rules; the tests check them alone.
//!
//! **Rules** (all times in ms; `stream time` is the largest timestamp a task has seen, see ARCHITECTURE.md):
//! - time windows `[start, end)`: a record updates a window only while `end + grace > stream time`; the window
//!   is *closed* (its final result is emitted by `suppress`) once `end + grace <= stream time`.
//! - session windows `[first, last]` (inclusive): a record is merged with every session of its key whose
//!   `first - gap <= ts <= last + gap`; the merged session is updated only while `merged.last + grace >=
//!   stream time`. A session is closed once `last + gap + grace < stream time`: from then on no accepted record
//!   can merge into it.

use std::time::Duration;

use crate::record::Window;

/// Tumbling (`advance == size`) or hopping (`advance < size`) time windows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeWindows {
    pub size_ms: i64,
    pub advance_ms: i64,
    pub grace_ms: i64,
}

impl TimeWindows {
    /// Fixed-size, non-overlapping windows; no grace period unless [`TimeWindows::grace`] sets one.
    pub fn tumbling(size: Duration) -> TimeWindows {
        let size_ms = ms(size);
        TimeWindows {
            size_ms,
            advance_ms: size_ms,
            grace_ms: 0,
        }
    }

    /// Fixed-size windows starting every `advance`; a record falls in `size / advance` windows.
    pub fn hopping(size: Duration, advance: Duration) -> TimeWindows {
        TimeWindows {
            size_ms: ms(size),
            advance_ms: ms(advance),
            grace_ms: 0,
        }
    }

    /// How long after a window's end out-of-order records are still admitted.
    pub fn grace(mut self, grace: Duration) -> TimeWindows {
        self.grace_ms = ms(grace);
        self
    }

    /// Checks the sizes (the builder calls it; an invalid spec is a programming error reported at build time).
    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.size_ms <= 0 {
            return Err("window size must be at least 1 ms".into());
        }
        if self.advance_ms <= 0 || self.advance_ms > self.size_ms {
            return Err(format!(
                "window advance must be between 1 ms and the window size ({} ms), got {} ms",
                self.size_ms, self.advance_ms
            ));
        }
        Ok(())
    }

    /// The windows containing `ts` (which must be >= 0), by ascending start. Windows never start before 0.
    pub fn windows_for(&self, ts: i64) -> impl Iterator<Item = Window> + '_ {
        debug_assert!(ts >= 0);
        let first =
            ((ts - self.size_ms + self.advance_ms).max(0) / self.advance_ms) * self.advance_ms;
        let size = self.size_ms;
        // Checked and saturating: a record's timestamp comes from its producer and may be near i64::MAX, where
        // the next start or a window's end would overflow (a panic in debug, a negative end in release that would
        // drop the record as late).
        (0..)
            .map_while(move |i: i64| i.checked_mul(self.advance_ms)?.checked_add(first))
            .take_while(move |s| *s <= ts)
            .map(move |start| Window {
                start,
                end: start.saturating_add(size),
            })
    }

    /// When `w` closes: once stream time reaches this, the window takes no more records.
    pub fn close_time(&self, w: Window) -> i64 {
        w.end.saturating_add(self.grace_ms)
    }
}

/// Session windows: a key's activity separated by gaps longer than `gap_ms`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionWindows {
    pub gap_ms: i64,
    pub grace_ms: i64,
}

impl SessionWindows {
    /// Sessions closed by `gap` of inactivity; no grace period unless [`SessionWindows::grace`] sets one.
    pub fn with_inactivity_gap(gap: Duration) -> SessionWindows {
        SessionWindows {
            gap_ms: ms(gap),
            grace_ms: 0,
        }
    }

    /// How long after a session's last event (plus the gap) out-of-order records are still admitted.
    pub fn grace(mut self, grace: Duration) -> SessionWindows {
        self.grace_ms = ms(grace);
        self
    }

    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.gap_ms <= 0 {
            return Err("session inactivity gap must be at least 1 ms".into());
        }
        Ok(())
    }

    /// Whether a record at `ts` joins the existing session `s`.
    pub fn overlaps(&self, s: Window, ts: i64) -> bool {
        s.start.saturating_sub(self.gap_ms) <= ts && ts <= s.end.saturating_add(self.gap_ms)
    }

    /// The session a record at `ts` forms with the sessions it overlaps (`overlapping` need not be sorted).
    pub fn merge(&self, ts: i64, overlapping: &[Window]) -> Window {
        overlapping
            .iter()
            .fold(Window { start: ts, end: ts }, |m, s| Window {
                start: m.start.min(s.start),
                end: m.end.max(s.end),
            })
    }

    /// Whether a (merged) session may still be updated at `stream_time`.
    pub fn accepts(&self, merged: Window, stream_time: i64) -> bool {
        merged.end.saturating_add(self.grace_ms) >= stream_time
    }

    /// When session `s` closes: once stream time is past this, no accepted record can merge into it.
    pub fn close_time(&self, s: Window) -> i64 {
        s.end
            .saturating_add(self.gap_ms)
            .saturating_add(self.grace_ms)
            .saturating_add(1)
    }
}

/// The time bound of a stream-stream join: records of the two streams with the same key join when their
/// timestamps differ by at most `diff_ms`. A record is late (dropped) when `ts + diff + grace < stream time`;
/// buffered records are deleted once `ts + 2·diff + grace < stream time`, when no record that is not late can
/// join them any more.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JoinWindows {
    pub diff_ms: i64,
    pub grace_ms: i64,
}

impl JoinWindows {
    /// Joins records at most `diff` apart (before or after); no grace period unless set.
    pub fn of(diff: Duration) -> JoinWindows {
        JoinWindows {
            diff_ms: ms(diff),
            grace_ms: 0,
        }
    }

    /// How long after the join window out-of-order records are still joined.
    pub fn grace(mut self, grace: Duration) -> JoinWindows {
        self.grace_ms = ms(grace);
        self
    }

    /// How long a record stays buffered after its timestamp.
    pub fn retention_ms(&self) -> i64 {
        self.diff_ms.saturating_mul(2).saturating_add(self.grace_ms)
    }
}

/// Which windows a grouped stream is aggregated over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Windows {
    Time(TimeWindows),
    Session(SessionWindows),
}

impl Windows {
    /// When window `w` closes (stream time at which its final result is emitted).
    pub fn close_time(&self, w: Window) -> i64 {
        match self {
            Windows::Time(t) => t.close_time(w),
            Windows::Session(s) => s.close_time(w),
        }
    }
}

impl From<TimeWindows> for Windows {
    fn from(w: TimeWindows) -> Windows {
        Windows::Time(w)
    }
}

impl From<SessionWindows> for Windows {
    fn from(w: SessionWindows) -> Windows {
        Windows::Session(w)
    }
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {

    #[test]
    fn windows_of_a_timestamp_near_the_end_of_time_do_not_overflow() {
        let w = TimeWindows::hopping(Duration::from_millis(10), Duration::from_millis(5));
        let got: Vec<Window> = w.windows_for(i64::MAX).collect();
        assert!(!got.is_empty());
        for win in &got {
            assert!(win.start >= 0 && win.end >= win.start, "{win:?}");
        }
        assert_eq!(got.last().unwrap().end, i64::MAX);
    }
    use super::*;
    use proptest::prelude::*;

    fn starts(w: &TimeWindows, ts: i64) -> Vec<i64> {
        w.windows_for(ts).map(|w| w.start).collect()
    }

    #[test]
    fn tumbling_windows_hold_each_timestamp_once() {
        let w = TimeWindows::tumbling(Duration::from_millis(10));
        assert_eq!(starts(&w, 0), vec![0]);
        assert_eq!(starts(&w, 9), vec![0]);
        assert_eq!(starts(&w, 10), vec![10]);
        assert_eq!(w.windows_for(25).next().unwrap().end, 30);
    }

    #[test]
    fn hopping_windows_overlap_and_never_start_below_zero() {
        let w = TimeWindows::hopping(Duration::from_millis(10), Duration::from_millis(5));
        assert_eq!(starts(&w, 3), vec![0]);
        assert_eq!(starts(&w, 7), vec![0, 5]);
        assert_eq!(starts(&w, 10), vec![5, 10]);
        assert_eq!(starts(&w, 14), vec![5, 10]);
    }

    #[test]
    fn a_window_closes_at_end_plus_grace() {
        let w = TimeWindows::tumbling(Duration::from_millis(10)).grace(Duration::from_millis(3));
        let win = Window { start: 0, end: 10 };
        assert_eq!(w.close_time(win), 13);
    }

    #[test]
    fn invalid_specs_are_refused() {
        assert!(TimeWindows::tumbling(Duration::ZERO).validate().is_err());
        assert!(
            TimeWindows::hopping(Duration::from_millis(5), Duration::from_millis(6))
                .validate()
                .is_err()
        );
        assert!(SessionWindows::with_inactivity_gap(Duration::ZERO)
            .validate()
            .is_err());
    }

    #[test]
    fn a_record_between_two_sessions_bridges_them() {
        let s = SessionWindows::with_inactivity_gap(Duration::from_millis(5));
        let a = Window { start: 0, end: 2 };
        let b = Window { start: 12, end: 20 };
        assert!(s.overlaps(a, 7) && s.overlaps(b, 7));
        assert_eq!(s.merge(7, &[a, b]), Window { start: 0, end: 20 });
        assert!(!s.overlaps(a, 8));
    }

    /// Sessions built one record at a time (in any order, no lateness) equal the sessions of the sorted
    /// timestamps split where two neighbours are more than `gap` apart.
    fn sessions_incrementally(gap: i64, ts: &[i64]) -> Vec<Window> {
        let s = SessionWindows {
            gap_ms: gap,
            grace_ms: 0,
        };
        let mut sessions: Vec<Window> = Vec::new();
        for &t in ts {
            let (over, rest): (Vec<Window>, Vec<Window>) =
                sessions.into_iter().partition(|w| s.overlaps(*w, t));
            sessions = rest;
            sessions.push(s.merge(t, &over));
        }
        sessions.sort();
        sessions
    }

    fn sessions_reference(gap: i64, ts: &[i64]) -> Vec<Window> {
        let mut sorted = ts.to_vec();
        sorted.sort();
        let mut out: Vec<Window> = Vec::new();
        for t in sorted {
            match out.last_mut() {
                Some(w) if t - w.end <= gap => w.end = t,
                _ => out.push(Window { start: t, end: t }),
            }
        }
        out
    }

    proptest! {
        #[test]
        fn session_merging_is_order_independent(gap in 1i64..20, ts in proptest::collection::vec(0i64..200, 1..40)) {
            prop_assert_eq!(sessions_incrementally(gap, &ts), sessions_reference(gap, &ts));
        }

        #[test]
        fn hopping_windows_are_exactly_those_containing_the_timestamp(
            size in 1i64..50, adv_div in 1i64..10, ts in 0i64..500
        ) {
            let advance = (size / adv_div).max(1);
            let w = TimeWindows { size_ms: size, advance_ms: advance, grace_ms: 0 };
            let got: Vec<i64> = w.windows_for(ts).map(|w| w.start).collect();
            let want: Vec<i64> = (0..=ts).filter(|s| s % advance == 0 && *s <= ts && ts < s + size).collect();
            prop_assert_eq!(got, want);
        }
    }
}
