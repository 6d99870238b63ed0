//! The overview's recent history: totals of bytes and messages in and out, sampled on a timer into a bounded
//! ring buffer, from which rates per second are derived; and each consumer group's total lag, sampled on the
//! same timer (bounded too: `capacity` samples for at most `max_groups` groups), for the group page's lag chart
//! and time-to-catch-up estimate.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fjord_broker::metrics::Metrics;
use fjord_broker::BrokerState;

/// Cumulative counters at one instant.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Sample {
    /// Milliseconds since the epoch.
    pub at_ms: i64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub messages_in: u64,
}

/// The last `capacity` samples, oldest first; and the count of sampling rounds done, which the live streams
/// (`crate::live`) watch: each round (the totals and the groups' lags recorded) wakes every stream once, with no
/// timer of its own.
pub struct History {
    capacity: usize,
    /// The wall clock and the monotonic clock when the history began: a sample's time is the first plus the
    /// monotonic time since (see [`History::now_ms`]).
    origin: (i64, std::time::Instant),
    samples: Mutex<VecDeque<Sample>>,
    rounds: tokio::sync::watch::Sender<u64>,
}

impl History {
    pub fn new(capacity: usize) -> Self {
        assert!(capacity >= 2, "rates need two samples");
        History {
            capacity,
            origin: (fjord_broker::now_ms(), std::time::Instant::now()),
            samples: Mutex::new(VecDeque::with_capacity(capacity)),
            rounds: tokio::sync::watch::Sender::new(0),
        }
    }

    /// The time of a sample taken now, in milliseconds since the epoch: the wall clock at the start plus the
    /// monotonic time since, so that samples always move forward by the time that passed. A wall clock stepped
    /// back (NTP, a VM resumed) would otherwise give samples older than the last one, which the rates and the
    /// live streams (whose cursor is the last time sent) would skip until the clock caught up, freezing the
    /// charts; the cost is that a step leaves the chart's times off the new clock by the step until a restart.
    pub fn now_ms(&self) -> i64 {
        let (wall, at) = self.origin;
        wall.saturating_add(i64::try_from(at.elapsed().as_millis()).unwrap_or(i64::MAX))
    }

    /// Sampling rounds done so far; `changed()` wakes after the next one.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.rounds.subscribe()
    }

    /// A round is recorded (rates and lags): wakes the subscribers.
    pub fn round_done(&self) {
        self.rounds.send_modify(|n| *n += 1);
    }

    pub fn push(&self, s: Sample) {
        let mut q = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        if q.len() == self.capacity {
            q.pop_front();
        }
        q.push_back(s);
    }

    /// Rates per second between consecutive samples: (at_ms, bytes in/s, bytes out/s, messages in/s). A counter
    /// that went down (a topic deleted takes its counters with it) counts as no traffic, not a negative rate.
    pub fn rates(&self) -> Vec<(i64, f64, f64, f64)> {
        let q = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        q.iter()
            .zip(q.iter().skip(1))
            .filter(|(a, b)| b.at_ms > a.at_ms)
            .map(|(a, b)| {
                let dt = (b.at_ms - a.at_ms) as f64 / 1000.0;
                let r = |x: u64, y: u64| y.saturating_sub(x) as f64 / dt;
                (
                    b.at_ms,
                    r(a.bytes_in, b.bytes_in),
                    r(a.bytes_out, b.bytes_out),
                    r(a.messages_in, b.messages_in),
                )
            })
            .collect()
    }
}

/// The broker's totals now (taken at `at_ms`): the per-topic counters summed over the topics that exist.
pub fn sample(state: &BrokerState, at_ms: i64) -> Sample {
    let meta = state.meta.state();
    let m = &state.metrics;
    let mut s = Sample {
        at_ms,
        ..Sample::default()
    };
    for name in meta.topics.keys() {
        let labels = Metrics::topic(name);
        // `get` never creates a series: a topic without traffic stays out of /metrics.
        s.bytes_in += m.bytes_in.get(&labels).map_or(0, |c| c.get());
        s.bytes_out += m.bytes_out.get(&labels).map_or(0, |c| c.get());
        s.messages_in += m.messages_in.get(&labels).map_or(0, |c| c.get());
    }
    s
}

pub fn spawn_sampler(
    state: Arc<BrokerState>,
    history: Arc<History>,
    lag_history: Arc<LagHistory>,
    every: Duration,
) {
    let weak = Arc::downgrade(&state);
    drop(state);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(state) = weak.upgrade() else { return };
            let s = sample(&state, history.now_ms());
            history.push(s);
            // The groups' lags take the coordinator's and partitions' locks: on a blocking thread.
            let lags = lag_history.clone();
            let _ = tokio::task::spawn_blocking(move || {
                lags.record(s.at_ms, crate::api::group_lags(&state));
            })
            .await;
            history.round_done();
        }
    });
}

/// One group's lag samples: (milliseconds since the epoch, total lag), oldest first.
pub type LagSamples = Vec<(i64, i64)>;

/// Each group's total lag over the last `capacity` samples, for at most `max_groups` groups: with more, those
/// with the largest lag now (a group dropped loses its samples), and besides them the groups a live stream
/// follows ([`LagHistory::follow`]; one per stream, at most `crate::live::MAX_STREAMS` at once) or let go of
/// within [`FOLLOW_GRACE`]. Those are groups that exist (only listed groups are recorded), but a client opening
/// and closing streams quickly can hold more than `MAX_STREAMS` of them for the grace: memory stays under
/// `capacity * 16` bytes per group kept, at most every group of the broker.
pub struct LagHistory {
    capacity: usize,
    max_groups: usize,
    groups: Mutex<HashMap<String, VecDeque<(i64, i64)>>>,
    /// Groups followed by live streams: how many streams follow each, and when the last one let go (a group
    /// stays sampled for `follow_grace` after that, so a stream that reconnects, at its end or when its tab is
    /// shown again, finds its samples).
    followed: Arc<Mutex<FollowedGroups>>,
    follow_grace: Duration,
}

/// Per followed group: the streams following it, and when the last one let go.
type FollowedGroups = HashMap<String, (usize, Option<std::time::Instant>)>;

/// How long a group no stream follows any more stays sampled (beyond the largest lags): a few sampling rounds.
pub const FOLLOW_GRACE: Duration = Duration::from_secs(20);

/// A live stream's hold on its group's lag samples: while it lives, the group is sampled even when it is not
/// among the `max_groups` largest lags.
pub struct Followed {
    followed: Arc<Mutex<FollowedGroups>>,
    group: String,
}

impl Drop for Followed {
    fn drop(&mut self) {
        let mut f = self.followed.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((n, released)) = f.get_mut(&self.group) {
            *n -= 1;
            if *n == 0 {
                *released = Some(std::time::Instant::now());
            }
        }
    }
}

impl LagHistory {
    pub fn new(capacity: usize, max_groups: usize) -> Self {
        LagHistory {
            capacity,
            max_groups,
            groups: Mutex::new(HashMap::new()),
            followed: Arc::default(),
            follow_grace: FOLLOW_GRACE,
        }
    }

    /// Keeps `group` sampled while the guard lives (a live stream of its lag).
    pub fn follow(&self, group: &str) -> Followed {
        let mut f = self.followed.lock().unwrap_or_else(|e| e.into_inner());
        let e = f.entry(group.to_string()).or_insert((0, None));
        e.0 += 1;
        e.1 = None;
        Followed {
            followed: self.followed.clone(),
            group: group.to_string(),
        }
    }

    /// One round: every group's total lag at `at_ms`. Groups no longer listed (deleted, or no longer among the
    /// `max_groups` largest lags nor followed) are forgotten.
    pub fn record(&self, at_ms: i64, mut lags: Vec<(String, i64)>) {
        let mut followed = self.followed.lock().unwrap_or_else(|e| e.into_inner());
        let grace = self.follow_grace;
        followed.retain(|_, (_, released)| released.is_none_or(|t| t.elapsed() < grace));
        if lags.len() > self.max_groups {
            lags.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            let rest = lags.split_off(self.max_groups);
            lags.extend(rest.into_iter().filter(|(g, _)| followed.contains_key(g)));
        }
        drop(followed);
        let mut m = self.groups.lock().unwrap_or_else(|e| e.into_inner());
        let keep: HashSet<&str> = lags.iter().map(|(g, _)| g.as_str()).collect();
        m.retain(|g, _| keep.contains(g.as_str()));
        for (g, lag) in lags {
            let q = m
                .entry(g)
                .or_insert_with(|| VecDeque::with_capacity(self.capacity));
            if q.len() == self.capacity {
                q.pop_front();
            }
            q.push_back((at_ms, lag));
        }
    }

    pub fn samples(&self, group: &str) -> LagSamples {
        let m = self.groups.lock().unwrap_or_else(|e| e.into_inner());
        m.get(group)
            .map(|q| q.iter().copied().collect())
            .unwrap_or_default()
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.groups.lock().unwrap().len()
    }
}

/// The window the catch-up estimate looks back over.
pub const CATCH_UP_WINDOW_MS: i64 = 5 * 60 * 1000;

/// How soon the group catches up: the lag's change per second over the samples of the last
/// [`CATCH_UP_WINDOW_MS`] (first to last), and, while it falls, the time for `lag_now` to reach 0 at that pace.
/// States: `caught_up` (no lag now), `catching_up` (with `seconds`), `falling_behind` (the lag grows),
/// `stalled` (a lag that did not change: nothing consumed, or consumed as fast as produced), `unknown` (fewer
/// than two samples yet).
pub fn catch_up(samples: &[(i64, i64)], lag_now: i64) -> serde_json::Value {
    use serde_json::json;
    let last_at = samples.last().map_or(0, |s| s.0);
    let window: Vec<&(i64, i64)> = samples
        .iter()
        .filter(|s| s.0 >= last_at - CATCH_UP_WINDOW_MS)
        .collect();
    let rate = match (window.first(), window.last()) {
        (Some(a), Some(b)) if b.0 > a.0 => Some((b.1 - a.1) as f64 / ((b.0 - a.0) as f64 / 1000.0)),
        _ => None,
    };
    let window_ms = match (window.first(), window.last()) {
        (Some(a), Some(b)) => b.0 - a.0,
        _ => 0,
    };
    let (state, seconds) = match rate {
        _ if lag_now <= 0 => ("caught_up", Some(0.0)),
        None => ("unknown", None),
        Some(r) if r < 0.0 => ("catching_up", Some(lag_now as f64 / -r)),
        Some(r) if r > 0.0 => ("falling_behind", None),
        Some(_) => ("stalled", None),
    };
    json!({
        "state": state, "seconds": seconds, "lag_change_per_sec": rate, "window_ms": window_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(at_ms: i64, bytes_in: u64) -> Sample {
        Sample {
            at_ms,
            bytes_in,
            ..Sample::default()
        }
    }

    #[test]
    fn keeps_the_last_samples_and_derives_rates_per_second() {
        let h = History::new(3);
        h.push(s(0, 0));
        h.push(s(2000, 1000));
        h.push(s(4000, 5000));
        h.push(s(6000, 5000));
        let r = h.rates();
        assert_eq!(r.len(), 2, "{r:?}");
        assert_eq!(r[0].0, 4000);
        assert_eq!(r[0].1, 2000.0);
        assert_eq!(r[1].1, 0.0);
    }

    #[test]
    fn lag_history_is_bounded_in_samples_and_groups() {
        let h = LagHistory::new(3, 2);
        for t in 0..5 {
            h.record(
                t * 1000,
                vec![("a".into(), 10 - t), ("b".into(), 100), ("c".into(), 1)],
            );
        }
        // Two groups kept, the largest lags; three samples each, the latest.
        assert_eq!(h.len(), 2);
        assert_eq!(h.samples("a"), [(2000, 8), (3000, 7), (4000, 6)]);
        assert_eq!(h.samples("b").len(), 3);
        assert!(h.samples("c").is_empty());
        // A group that goes away (deleted) is forgotten.
        h.record(5000, vec![("b".into(), 100)]);
        assert_eq!(h.len(), 1);
        assert!(h.samples("a").is_empty());
    }

    /// A group a live stream follows is sampled beyond `max_groups`, until the stream lets go.
    #[test]
    fn a_followed_group_is_sampled_beyond_the_largest_lags() {
        let mut h = LagHistory::new(3, 1);
        let round = |t| vec![("big".into(), 100), ("small".into(), t)];
        h.record(0, round(1));
        assert!(h.samples("small").is_empty());
        let f = h.follow("small");
        let g = h.follow("small");
        h.record(1000, round(2));
        h.record(2000, round(3));
        assert_eq!(h.samples("small"), [(1000, 2), (2000, 3)]);
        assert_eq!(h.samples("big").len(), 3);
        drop(f);
        h.record(3000, round(4));
        assert_eq!(h.samples("small").len(), 3, "still followed by one stream");
        drop(g);
        // Let go: still sampled for the grace (a stream reconnecting finds its samples), then forgotten.
        h.record(4000, round(5));
        assert_eq!(h.samples("small").len(), 3, "within the grace");
        h.follow_grace = Duration::ZERO;
        h.record(5000, round(6));
        assert!(h.samples("small").is_empty());
        assert_eq!(h.len(), 1);
    }

    #[test]
    fn catch_up_estimates_from_the_lags_pace() {
        let state = |v: &serde_json::Value| v["state"].as_str().unwrap().to_string();
        // 100 records less every 10 s: 10/s; 400 left is 40 s.
        let falling = [(0, 600), (10_000, 500), (20_000, 400)];
        let v = catch_up(&falling, 400);
        assert_eq!(state(&v), "catching_up");
        assert_eq!(v["seconds"], 40.0);
        assert_eq!(v["lag_change_per_sec"], -10.0);
        assert_eq!(state(&catch_up(&[(0, 5), (5000, 9)], 9)), "falling_behind");
        assert_eq!(state(&catch_up(&[(0, 5), (5000, 5)], 5)), "stalled");
        assert_eq!(state(&catch_up(&[(0, 5)], 5)), "unknown");
        assert_eq!(state(&catch_up(&[], 5)), "unknown");
        assert_eq!(state(&catch_up(&[(0, 5), (5000, 5)], 0)), "caught_up");
        // Only the last 5 minutes count: an old plateau does not slow the estimate.
        let old_then_fast = [(0, 1000), (600_000, 1000), (900_000, 700), (960_000, 600)];
        let v = catch_up(&old_then_fast, 600);
        assert_eq!(v["window_ms"], 60_000);
        assert_eq!(state(&v), "catching_up");
        assert!((v["seconds"].as_f64().unwrap() - 360.0).abs() < 1e-6, "{v}");
    }

    #[test]
    fn each_round_wakes_the_subscribers_once() {
        let h = History::new(2);
        let mut rx = h.subscribe();
        assert!(!rx.has_changed().unwrap());
        h.round_done();
        let mut late = h.subscribe();
        assert!(rx.has_changed().unwrap());
        assert_eq!(*rx.borrow_and_update(), 1);
        assert!(!rx.has_changed().unwrap());
        // A subscriber waits for the next round, not one before it subscribed.
        assert!(!late.has_changed().unwrap());
        h.round_done();
        assert_eq!(*late.borrow_and_update(), 2);
    }

    /// Sample times follow the monotonic clock from the start: when the wall clock was an hour ahead at the
    /// start and has since been set back (here: the origin an hour ahead of the wall clock now), samples still
    /// move forward by the time that passed, and their rates are kept.
    #[test]
    fn sample_times_move_forward_when_the_wall_clock_steps_back() {
        let mut h = History::new(4);
        let wall = fjord_broker::now_ms();
        h.origin = (wall + 3_600_000, std::time::Instant::now());
        let a = h.now_ms();
        std::thread::sleep(Duration::from_millis(20));
        let b = h.now_ms();
        assert!(a >= wall + 3_600_000, "{a} {wall}");
        assert!(b >= a + 20, "{a} {b}");
        h.push(s(a, 0));
        h.push(s(b, 1000));
        assert_eq!(h.rates().len(), 1);
        assert_eq!(h.rates()[0].0, b);
    }

    #[test]
    fn a_counter_going_down_is_no_traffic() {
        let h = History::new(4);
        h.push(s(0, 100));
        h.push(s(1000, 10));
        assert_eq!(h.rates()[0].1, 0.0);
    }
}
