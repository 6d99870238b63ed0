//! Broker liveness as KRaft's active controller tracks it: every broker heartbeats to the raft
//! leader, which keeps the time of each broker's last heartbeat in memory (never in the log, so a
//! heartbeat costs no raft write) and proposes `FenceBroker` for brokers silent longer than the
//! session timeout, `UnfenceBroker` for fenced brokers that heartbeat again.
//!
//! The table is only meaningful on the leader, and only for the term in which it was filled: a
//! node that becomes leader starts a new table in which every registered broker counts as seen
//! "now" (a grace period of one session timeout), because heartbeats went to the old leader.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{watch, Notify};
use tokio::time::Instant;

use crate::types::ClusterState;

pub(crate) struct Liveness {
    table: Mutex<Table>,
    state_rx: watch::Receiver<Arc<ClusterState>>,
    /// Wakes the leader's liveness task early when a fenced broker heartbeats, so that it is
    /// unfenced without waiting for the next tick.
    pub(crate) wake: Notify,
}

#[derive(Default)]
struct Table {
    /// The raft term the table belongs to; `None` while this node does not lead.
    term: Option<u64>,
    last_seen: BTreeMap<i32, Instant>,
    /// Real heartbeats only (`last_seen` also holds the grace period's start).
    heard: BTreeMap<i32, Instant>,
    /// Brokers that heartbeated while fenced; the leader proposes to unfence them.
    returned: BTreeSet<i32>,
}

/// What the leader should propose after a tick.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Verdict {
    pub(crate) fence: Vec<i32>,
    pub(crate) unfence: Vec<i32>,
}

impl Liveness {
    pub(crate) fn new(state_rx: watch::Receiver<Arc<ClusterState>>) -> Liveness {
        Liveness {
            table: Mutex::new(Table::default()),
            state_rx,
            wake: Notify::new(),
        }
    }

    /// The table for `term`, started afresh (every registered broker seen `now`) if it belonged
    /// to another term or to no leadership.
    fn table_for(&self, term: u64, now: Instant) -> MutexGuard<'_, Table> {
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        if table.term != Some(term) {
            let registered: Vec<i32> = self.state_rx.borrow().brokers.keys().copied().collect();
            *table = Table {
                term: Some(term),
                last_seen: registered.into_iter().map(|b| (b, now)).collect(),
                heard: BTreeMap::new(),
                returned: BTreeSet::new(),
            };
        }
        table
    }

    /// A heartbeat from `broker` reached this node, the leader in `term`.
    pub(crate) fn record(&self, term: u64, broker: i32) {
        let now = Instant::now();
        let fenced = self.state_rx.borrow().fenced.contains(&broker);
        let mut table = self.table_for(term, now);
        table.last_seen.insert(broker, now);
        table.heard.insert(broker, now);
        if fenced && table.returned.insert(broker) {
            drop(table);
            self.wake.notify_one();
        }
    }

    /// This node does not lead (any more): forget everything.
    pub(crate) fn step_down(&self) {
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        *table = Table::default();
    }

    /// What to propose as leader in `term`: fence every registered, unfenced broker other than
    /// `own` whose last heartbeat is older than `session_timeout`; unfence every fenced broker
    /// that heartbeated since.
    pub(crate) fn judge(
        &self,
        term: u64,
        state: &ClusterState,
        session_timeout: Duration,
        own: i32,
    ) -> Verdict {
        let now = Instant::now();
        let mut table = self.table_for(term, now);
        let mut verdict = Verdict::default();
        for &b in state.brokers.keys() {
            // A broker registered during this term is seen from the moment we notice it.
            let seen = *table.last_seen.entry(b).or_insert(now);
            if b != own && !state.fenced.contains(&b) && now - seen > session_timeout {
                verdict.fence.push(b);
            }
        }
        let returned = std::mem::take(&mut table.returned);
        verdict.unfence = returned
            .into_iter()
            .filter(|b| state.fenced.contains(b))
            .collect();
        verdict
    }

    /// Whether `broker` is still silent for longer than `session_timeout` in `term` (checked
    /// again right before proposing its fencing, in case a heartbeat arrived meanwhile).
    pub(crate) fn still_silent(&self, term: u64, broker: i32, session_timeout: Duration) -> bool {
        let now = Instant::now();
        let table = self.table_for(term, now);
        table
            .last_seen
            .get(&broker)
            .is_some_and(|&seen| now - seen > session_timeout)
    }

    /// When `broker`'s last heartbeat in `term` reached this leader, if one did.
    pub(crate) fn last_heartbeat(&self, term: u64, broker: i32) -> Option<Instant> {
        let now = Instant::now();
        let table = self.table_for(term, now);
        table.heard.get(&broker).copied()
    }

    /// Time since each broker's last heartbeat, if this node leads in `term`; empty otherwise.
    pub(crate) fn ages(&self, term: u64) -> BTreeMap<i32, Duration> {
        let table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        if table.term != Some(term) {
            return BTreeMap::new();
        }
        let now = Instant::now();
        table
            .last_seen
            .iter()
            .map(|(&b, &seen)| (b, now - seen))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{BrokerInfo, Command};

    fn state_with(ids: &[i32]) -> ClusterState {
        let mut s = ClusterState::default();
        for &id in ids {
            s.apply(&Command::RegisterBroker(BrokerInfo {
                id,
                host: "h".into(),
                port: 1,
                rack: None,
            }));
        }
        s
    }

    #[tokio::test]
    async fn a_new_term_grants_grace_then_silent_brokers_except_our_own_are_fenced() {
        let state = state_with(&[1, 2, 3]);
        let (tx, rx) = watch::channel(Arc::new(state.clone()));
        let live = Liveness::new(rx);
        let session = Duration::from_millis(200);
        assert_eq!(live.judge(5, &state, session, 1), Verdict::default());
        assert_eq!(live.ages(5).len(), 3);
        assert!(live.ages(4).is_empty(), "another term");
        tokio::time::sleep(Duration::from_millis(120)).await;
        live.record(5, 2);
        tokio::time::sleep(Duration::from_millis(120)).await;
        // 3 is silent for 240 ms; 2 heartbeated 120 ms ago; 1 is this node.
        let v = live.judge(5, &state, session, 1);
        assert_eq!(v.fence, vec![3]);
        assert!(live.still_silent(5, 3, session));
        assert!(!live.still_silent(5, 2, session));
        let ages = live.ages(5);
        assert!(ages[&3] > session && ages[&2] < session, "{ages:?}");

        // A new term starts over: everybody is seen now.
        assert_eq!(live.judge(6, &state, session, 1), Verdict::default());
        live.step_down();
        assert!(live.ages(6).is_empty());

        // A fenced broker that heartbeats is to be unfenced, once; the tick is woken.
        let mut fenced = state.clone();
        fenced.apply(&Command::FenceBroker { id: 3 });
        tx.send_replace(Arc::new(fenced.clone()));
        live.record(7, 3);
        tokio::time::timeout(Duration::from_secs(5), live.wake.notified())
            .await
            .expect("woken");
        let v = live.judge(7, &fenced, session, 1);
        assert_eq!(v.unfence, vec![3]);
        assert!(v.fence.is_empty());
        assert!(live.judge(7, &fenced, session, 1).unfence.is_empty());
        // A fenced broker is not fenced again however long it stays silent.
        tokio::time::sleep(Duration::from_millis(250)).await;
        live.record(7, 2);
        assert_eq!(live.judge(7, &fenced, session, 1), Verdict::default());
    }
}
