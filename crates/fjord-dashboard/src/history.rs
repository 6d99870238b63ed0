//! The overview's recent history: totals of bytes and messages in and out, sampled on a timer into a bounded
//! ring buffer, from which rates per second are derived.

use std::collections::VecDeque;
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

/// The last `capacity` samples, oldest first.
pub struct History {
    capacity: usize,
    samples: Mutex<VecDeque<Sample>>,
}

impl History {
    pub fn new(capacity: usize) -> Self {
        assert!(capacity >= 2, "rates need two samples");
        History {
            capacity,
            samples: Mutex::new(VecDeque::with_capacity(capacity)),
        }
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

/// The broker's totals now: the per-topic counters summed over the topics that exist.
pub fn sample(state: &BrokerState) -> Sample {
    let meta = state.meta.state();
    let m = &state.metrics;
    let mut s = Sample {
        at_ms: fjord_broker::now_ms(),
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

pub fn spawn_sampler(state: Arc<BrokerState>, history: Arc<History>, every: Duration) {
    let weak = Arc::downgrade(&state);
    drop(state);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(state) = weak.upgrade() else { return };
            history.push(sample(&state));
        }
    });
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
    fn a_counter_going_down_is_no_traffic() {
        let h = History::new(4);
        h.push(s(0, 100));
        h.push(s(1000, 10));
        assert_eq!(h.rates()[0].1, 0.0);
    }
}
