//! Replication, follower side and the leader's ISR upkeep (Kafka's `ReplicaFetcherThread` and
//! `Partition.maybeShrinkIsr`/`maybeExpandIsr`).
//!
//! A broker follows every partition it is a replica of but does not lead. For each leader broker one task
//! fetches all of that leader's partitions in one Fetch request (replica id = this broker), at each partition's
//! log end offset with its latest leader epoch (so the leader can answer with a diverging epoch, Fetch v12),
//! appends what comes back with the leader's offsets, fsyncs, and only then asks again: the offset a follower
//! reports has reached its disk, so the leader's high watermark counts only data durable on every in-sync
//! follower.
//!
//! The leader checks its ISR on a short tick: a follower that has not caught up within
//! `replica.lag.time.max.ms` leaves it, one that reached the high watermark (and this epoch's start) joins it;
//! each change is an AlterPartition committed through the metadata quorum, never a local decision.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{BrokerId, FetchRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use tokio::sync::watch;

use crate::interbroker::Conn;

use crate::partition::Partition;
use crate::BrokerState;

/// Fetch v12: topic names, `last_fetched_epoch` and `diverging_epoch` (KIP-595's truncation without a separate
/// OffsetForLeaderEpoch round trip).
const FETCH_VERSION: i16 = 12;
/// The largest response a follower accepts beyond what it asked for: the leader returns a partition's first
/// batch whole even when it is larger than the limits (KIP-74), and a batch is bounded by the request size limit.
fn max_response(state: &BrokerState) -> usize {
    let asked = prop_ms(state, "replica.fetch.response.max.bytes", 10 << 20) as usize;
    asked.max(state.config.socket_request_max_bytes) + (1 << 20)
}

/// The partitions this broker follows, by leader.
pub type Targets = BTreeMap<i32, Vec<Arc<Partition>>>;

/// Follower bookkeeping shared by the fetchers and `follow_metadata`.
pub struct Replication {
    targets: watch::Sender<Targets>,
    /// Test-only: fetchers idle while set (see [`Replication::pause_for_test`]).
    paused: watch::Sender<bool>,
    /// `follower.replication.throttled.rate`: one budget for every fetcher of this broker.
    throttle: std::sync::Mutex<TokenBucket>,
    /// `leader.replication.throttled.rate`: one budget for every follower fetching from this broker.
    leader_throttle: std::sync::Mutex<TokenBucket>,
    /// A [`report_offline_replicas`] proposal is in flight.
    reporting_offline: std::sync::atomic::AtomicBool,
    /// Serializes [`Replication::refresh`]: each reads the partitions' leaders and publishes what it read, so two
    /// at once could publish the older reading last (a follower fetching from a broker that no longer leads
    /// until the next metadata change).
    refreshing: std::sync::Mutex<()>,
}

impl Default for Replication {
    fn default() -> Self {
        Self {
            targets: watch::channel(Targets::new()).0,
            paused: watch::channel(false).0,
            throttle: std::sync::Mutex::new(TokenBucket::default()),
            leader_throttle: std::sync::Mutex::new(TokenBucket::default()),
            reporting_offline: std::sync::atomic::AtomicBool::new(false),
            refreshing: std::sync::Mutex::new(()),
        }
    }
}

/// A token bucket of bytes: `rate` per second, holding at most one second's worth. Fetches of throttled
/// partitions ask for at most the tokens available and are charged what they received afterwards, so the
/// balance may go negative by at most one batch per partition (a leader returns a first batch whole, KIP-74);
/// they are left out of the fetch until it is positive again.
#[derive(Debug, Default)]
pub struct TokenBucket {
    rate: u64,
    tokens: f64,
    last: Option<std::time::Instant>,
}

impl TokenBucket {
    /// Refills for the time since the last call at `rate` (a changed rate keeps the balance, capped) and
    /// returns the balance in bytes.
    pub fn refill(&mut self, rate: u64, now: std::time::Instant) -> f64 {
        let cap = rate as f64;
        match self.last {
            Some(last) if self.rate == rate => {
                let dt = now.saturating_duration_since(last).as_secs_f64();
                self.tokens = (self.tokens + dt * cap).min(cap);
            }
            // First use, or a new rate: start from a full second's worth (never more than was owed).
            _ => self.tokens = self.tokens.min(0.0) + cap,
        }
        self.rate = rate;
        self.last = Some(now);
        self.tokens
    }

    /// Charges `bytes` received.
    pub fn charge(&mut self, bytes: usize) {
        self.tokens -= bytes as f64;
    }

    /// How long until the balance is positive again at the current rate.
    pub fn wait(&self) -> Duration {
        if self.tokens > 0.0 || self.rate == 0 {
            return Duration::ZERO;
        }
        Duration::from_secs_f64((-self.tokens + 1.0) / self.rate as f64)
    }
}

impl Replication {
    /// Leader side of the throttle: the most bytes a fetch by follower `replica` of `p` may carry now, `None`
    /// when it is not throttled (no `leader.replication.throttled.rate`, the topic's
    /// `leader.replication.throttled.replicas` does not name this broker's replica, or the follower is in sync).
    /// `Some(0)` while the budget is spent: the follower gets no data this time.
    pub fn leader_budget(
        &self,
        state: &BrokerState,
        meta: &fjord_meta::ClusterState,
        p: &Partition,
        replica: i32,
    ) -> Option<usize> {
        let rate = state
            .config
            .dynamic_value(&meta.broker_configs, "leader.replication.throttled.rate")
            .and_then(|(v, _)| v.trim().parse::<u64>().ok())?;
        let v = meta
            .topics
            .get(&p.topic)?
            .configs
            .get("leader.replication.throttled.replicas")?;
        let listed = match crate::config::parse_throttled_replicas(v) {
            Ok(None) => true,
            Ok(Some(list)) => list.contains(&(p.index, state.config.node_id)),
            Err(_) => false,
        };
        if !listed || p.replication().isr.contains(&replica) {
            return None;
        }
        let tokens = self
            .leader_throttle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .refill(rate, std::time::Instant::now());
        Some(if tokens >= 1.0 { tokens as usize } else { 0 })
    }

    /// Charges the leader-side budget for `bytes` sent to a throttled follower.
    pub fn leader_charge(&self, bytes: usize) {
        self.leader_throttle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .charge(bytes);
    }
}

/// This broker's follower throttle rate in bytes/s (`follower.replication.throttled.rate`, dynamic: its own
/// value, else the cluster-wide default), if one is set.
fn follower_rate(state: &BrokerState, meta: &fjord_meta::ClusterState) -> Option<u64> {
    state
        .config
        .dynamic_value(&meta.broker_configs, "follower.replication.throttled.rate")
        .and_then(|(v, _)| v.trim().parse::<u64>().ok())
}

/// Whether this broker's follower fetches of `p` are throttled: its topic's
/// `follower.replication.throttled.replicas` names this replica (or is `*`) and it is not in the ISR (in-sync
/// followers are never throttled, as in Kafka).
fn follower_throttled(node_id: i32, meta: &fjord_meta::ClusterState, p: &Partition) -> bool {
    let Some(v) = meta
        .topics
        .get(&p.topic)
        .and_then(|t| t.configs.get("follower.replication.throttled.replicas"))
    else {
        return false;
    };
    let listed = match crate::config::parse_throttled_replicas(v) {
        Ok(None) => true,
        Ok(Some(list)) => list.contains(&(p.index, node_id)),
        Err(_) => false,
    };
    listed && !p.replication().isr.contains(&node_id)
}

impl Replication {
    /// **Test-only:** stops (or resumes) this broker's follower fetches while everything else, heartbeats
    /// included, goes on: a follower that is alive but lagging, as a slow disk or a saturated link makes one. No
    /// production path calls it.
    #[doc(hidden)]
    pub fn pause_for_test(&self, paused: bool) {
        self.paused.send_replace(paused);
    }

    /// Recomputes which partitions this broker follows, from whom (after every metadata change).
    pub fn refresh(&self, state: &BrokerState) {
        let _serial = self.refreshing.lock().unwrap_or_else(|p| p.into_inner());
        let mut targets = Targets::new();
        for p in state.partitions.all() {
            let leader = p.leader();
            // A replica in an offline log directory does not fetch: it would report positions it cannot make
            // durable; it drops out of the ISR by lag.
            if leader >= 0 && leader != state.config.node_id && p.check_online().is_ok() {
                targets.entry(leader).or_default().push(p);
            }
        }
        self.targets.send_if_modified(|old| {
            let same = old.len() == targets.len()
                && old.iter().zip(targets.iter()).all(|((a, x), (b, y))| {
                    a == b && x.len() == y.len() && x.iter().zip(y).all(|(p, q)| Arc::ptr_eq(p, q))
                });
            if !same {
                *old = targets;
            }
            !same
        });
    }

    /// The partitions followed from each leader right now.
    pub fn targets(&self) -> Targets {
        self.targets.borrow().clone()
    }
}

fn prop_ms(state: &BrokerState, key: &str, default: u64) -> u64 {
    state
        .config
        .props
        .get(key)
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Runs the fetchers (one per leader broker) and the ISR checks until shutdown.
pub async fn run(state: Arc<BrokerState>, mut shutdown: watch::Receiver<bool>) {
    let mut rx = state.replication.targets.subscribe();
    let mut fetchers: HashMap<i32, tokio::task::JoinHandle<()>> = HashMap::new();
    let max_lag = prop_ms(&state, "replica.lag.time.max.ms", 30_000);
    let mut isr_tick = tokio::time::interval(Duration::from_millis((max_lag / 4).clamp(50, 500)));
    isr_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let leaders: Vec<i32> = rx.borrow_and_update().keys().copied().collect();
        fetchers.retain(|_, h| !h.is_finished());
        for leader in leaders {
            fetchers.entry(leader).or_insert_with(|| {
                tokio::spawn(fetch_from(
                    state.clone(),
                    leader,
                    state.replication.targets.subscribe(),
                    shutdown.clone(),
                ))
            });
        }
        tokio::select! {
            changed = rx.changed() => if changed.is_err() { break },
            _ = isr_tick.tick() => {
                check_isr(&state, max_lag as i64);
                report_offline_replicas(&state);
            }
            _ = shutdown.changed() => break,
        }
    }
    for (_, h) in fetchers {
        h.abort();
    }
}

/// `auto.leader.rebalance.enable` (Kafka's default: on): every `leader.imbalance.check.interval.seconds`, the
/// broker running the raft leader (the active controller) moves leadership back to preferred replicas (the first
/// of each replica list) for every broker whose share of preferred partitions led by someone else exceeds
/// `leader.imbalance.per.broker.percentage`, where the preferred replica is live and in sync. Each move is an
/// `ElectPreferredLeader` command, as ElectLeaders makes it.
pub async fn rebalance_leaders(state: Arc<BrokerState>, mut shutdown: watch::Receiver<bool>) {
    if state
        .config
        .props
        .get("auto.leader.rebalance.enable")
        .map(String::as_str)
        != Some("true")
    {
        return;
    }
    let every =
        Duration::from_secs(prop_ms(&state, "leader.imbalance.check.interval.seconds", 300).max(1));
    let ratio = prop_ms(&state, "leader.imbalance.per.broker.percentage", 10) as f64 / 100.0;
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        if state.meta.leader() != Some(state.config.node_id) {
            continue;
        }
        let meta = state.meta.state();
        // preferred broker -> (partitions it should lead, those led by another broker and electable now)
        let mut by_broker: BTreeMap<i32, (usize, Vec<(String, i32)>)> = BTreeMap::new();
        for t in meta.topics.values() {
            for (i, p) in t.partitions.iter().enumerate() {
                let Some(&preferred) = p.replicas.first() else {
                    continue;
                };
                let entry = by_broker.entry(preferred).or_default();
                entry.0 += 1;
                if p.leader != preferred && meta.is_live(preferred) && p.isr.contains(&preferred) {
                    entry.1.push((t.name.clone(), i as i32));
                }
            }
        }
        for (broker, (total, moves)) in by_broker {
            if moves.is_empty() || (moves.len() as f64) / (total as f64) <= ratio {
                continue;
            }
            tracing::info!(
                broker,
                partitions = moves.len(),
                "moving leadership back to the preferred replica"
            );
            for (topic, partition) in moves {
                let cmd = fjord_meta::Command::ElectPreferredLeader { topic, partition };
                if let Err(e) = state.meta.propose(cmd).await {
                    tracing::warn!(error = %e, "preferred leader election failed");
                    break;
                }
            }
        }
    }
}

/// `unclean.leader.election.enable`: every second, the broker running the raft leader (the active controller) gives
/// each partition left without a live leader, whose topic enables unclean election (its own config, else the
/// cluster-wide dynamic broker config, else this broker's static one), a new leader: a live ISR member if one is
/// back, else the first live replica, as Kafka's controller does. Acknowledged writes only the old ISR held are
/// lost; that is what the setting trades for availability. Off (Kafka's default), such a partition stays offline
/// until an ISR member returns.
pub async fn elect_unclean_leaders(state: Arc<BrokerState>, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        if state.meta.leader() != Some(state.config.node_id) {
            continue;
        }
        let meta = state.meta.state();
        let mut wanted = Vec::new();
        for t in meta.topics.values() {
            let offline = |p: &&fjord_meta::PartitionMeta| {
                !meta.is_live(p.leader) && p.replicas.iter().any(|&r| meta.is_live(r))
            };
            if !t.partitions.iter().any(|p| offline(&p)) {
                continue;
            }
            let eff = state
                .config
                .effective_topic_configs_dynamic(&meta.broker_configs, &t.configs);
            if eff
                .get("unclean.leader.election.enable")
                .map(String::as_str)
                != Some("true")
            {
                continue;
            }
            for (i, p) in t.partitions.iter().enumerate() {
                if offline(&p) {
                    wanted.push((t.name.clone(), i as i32));
                }
            }
        }
        let mut elected = false;
        for (topic, partition) in wanted {
            tracing::warn!(%topic, partition, "no in-sync replica is live: electing an out-of-sync replica (unclean.leader.election.enable)");
            let cmd = fjord_meta::Command::ElectUncleanLeader { topic, partition };
            match state.meta.propose(cmd).await {
                Ok(fjord_meta::CommandResult::Ok) => elected = true,
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "unclean leader election failed");
                    break;
                }
            }
        }
        if elected {
            if let Err(e) = state.sync_partitions() {
                tracing::error!(error = %e, "applying metadata after unclean elections failed");
            }
        }
    }
}

/// Replicas this broker holds in a failed log directory (or could not open) that the metadata does not yet mark
/// offline: the controller marks them (`ReplicasOffline`, what KRaft does with a heartbeat's offline log dirs),
/// so they are never elected, leadership moves to an in-sync replica elsewhere and a disk error costs the
/// partition a replica, not its availability. One proposal at a time; repeated on later ticks until the
/// metadata reflects it.
fn report_offline_replicas(state: &Arc<BrokerState>) {
    use std::sync::atomic::Ordering;
    if !state.partitions.dirs().any_offline() {
        return;
    }
    let me = state.config.node_id;
    let meta = state.meta.state();
    let lost: Vec<(String, i32)> = meta
        .topics
        .values()
        .flat_map(|t| {
            t.partitions
                .iter()
                .enumerate()
                .filter(|(_, p)| p.replicas.contains(&me) && !p.offline.contains(&me))
                .map(|(i, _)| (t.name.clone(), i as i32))
        })
        .filter(|(t, i)| state.partitions.is_offline(t, *i))
        .collect();
    if lost.is_empty()
        || state
            .replication
            .reporting_offline
            .swap(true, Ordering::AcqRel)
    {
        return;
    }
    let state = state.clone();
    tokio::spawn(async move {
        tracing::warn!(partitions = lost.len(), "replicas in a failed log directory: asking the controller to move their leadership and ISR membership away");
        let cmd = fjord_meta::Command::ReplicasOffline {
            broker: me,
            partitions: lost,
        };
        match state.meta.propose(cmd).await {
            Ok(_) => {
                if let Err(e) = state.sync_partitions() {
                    tracing::error!(error = %e, "applying metadata after reporting offline replicas failed");
                }
            }
            Err(e) => tracing::warn!(error = %e, "reporting offline replicas failed; retrying"),
        }
        state
            .replication
            .reporting_offline
            .store(false, Ordering::Release);
    });
}

/// Asks the controller for the ISR changes this broker's led partitions need (one in flight per partition).
fn check_isr(state: &Arc<BrokerState>, max_lag_ms: i64) {
    let meta = state.meta.state();
    for p in state.partitions.all() {
        // Only live (registered, unfenced) brokers may join: the state machine refuses anything else.
        let Some(change) = p.wanted_isr_change(max_lag_ms, |b| meta.is_live(b)) else {
            continue;
        };
        let state = state.clone();
        tokio::spawn(async move {
            tracing::info!(topic = %p.topic, partition = p.index, isr = ?change.new_isr, "asking to change the ISR");
            match propose_isr(&state, &p, &change).await {
                Ok(()) => {
                    if let Err(e) = state.sync_partitions() {
                        tracing::error!(error = %e, "applying metadata after an ISR change failed");
                    }
                }
                Err(IsrOutcome::Refused(reason)) => {
                    tracing::warn!(topic = %p.topic, partition = p.index, %reason, "ISR change not made");
                    state.metrics.isr_update_failures.inc();
                    p.isr_change_failed(&change);
                }
                Err(IsrOutcome::Unknown(reason)) => {
                    // It may still commit: until the quorum says, the change stays pending (the high watermark
                    // keeps counting the maximal ISR, so nothing is acknowledged on a member that lacks it).
                    tracing::warn!(topic = %p.topic, partition = p.index, %reason, "ISR change outcome unknown; resolving it with the quorum");
                    state.metrics.isr_update_failures.inc();
                    resolve_unknown_isr_change(&state, &p, &change).await;
                }
            }
        });
    }
}

/// How an ISR change ended when it was not committed.
enum IsrOutcome {
    /// Definitely not made (the state machine refused, or no leader took it): ask again later.
    Refused(String),
    /// Proposed but not known to be committed (e.g. a raft leader change mid-way): it may still take effect.
    Unknown(String),
}

/// Settles an ISR change whose outcome is unknown: once this broker has caught up with the quorum (raft's
/// ReadIndex on the current leader commits or discards every earlier entry), either the partition epoch moved
/// (the change, or a newer one, is applied) or the change is gone for good and may be asked again. Until then it
/// stays pending; retried every second.
async fn resolve_unknown_isr_change(
    state: &BrokerState,
    p: &Partition,
    change: &crate::partition::IsrChange,
) {
    loop {
        if state.meta.sync().await.is_ok() {
            if let Err(e) = state.sync_partitions() {
                tracing::error!(error = %e, "applying metadata after an ISR change failed");
            }
            if p.replication().partition_epoch == change.partition_epoch {
                p.isr_change_failed(change);
            }
            return;
        }
        if p.check_online().is_err() || !p.is_leader() {
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Proposes an ISR change through the metadata quorum (Kafka's AlterPartition to the controller); the state
/// machine refuses it when the leader epoch or partition epoch moved on meanwhile.
async fn propose_isr(
    state: &BrokerState,
    p: &Partition,
    change: &crate::partition::IsrChange,
) -> Result<(), IsrOutcome> {
    use fjord_meta::{Command, CommandResult};
    let cmd = Command::AlterPartition {
        topic: p.topic.clone(),
        partition: p.index,
        leader: state.config.node_id,
        leader_epoch: change.leader_epoch,
        partition_epoch: change.partition_epoch,
        new_isr: change.new_isr.clone(),
    };
    match state.meta.propose(cmd).await {
        Ok(CommandResult::PartitionUpdated { .. }) => {
            if change.shrink {
                state.metrics.isr_shrinks.inc();
            } else {
                state.metrics.isr_expands.inc();
            }
            Ok(())
        }
        Ok(other) => Err(IsrOutcome::Refused(format!("refused: {other:?}"))),
        Err(e @ (fjord_meta::Error::NoQuorum(_) | fjord_meta::Error::Refused(_))) => {
            Err(IsrOutcome::Refused(e.to_string()))
        }
        Err(e) => Err(IsrOutcome::Unknown(e.to_string())),
    }
}

/// Follows every partition led by `leader` until none is left (or shutdown).
async fn fetch_from(
    state: Arc<BrokerState>,
    leader: i32,
    mut targets: watch::Receiver<Targets>,
    mut shutdown: watch::Receiver<bool>,
) {
    let wait_ms = prop_ms(&state, "replica.fetch.wait.max.ms", 500) as i32;
    let min_bytes = prop_ms(&state, "replica.fetch.min.bytes", 1) as i32;
    let part_max = prop_ms(&state, "replica.fetch.max.bytes", 1 << 20) as i32;
    let backoff = Duration::from_millis(prop_ms(&state, "replica.fetch.backoff.ms", 1000).max(50));
    let socket_timeout =
        Duration::from_millis(prop_ms(&state, "replica.socket.timeout.ms", 30_000));
    let mut conn: Option<Conn> = None;
    let mut paused = state.replication.paused.subscribe();
    tracing::info!(leader, "replica fetcher started");
    loop {
        if *shutdown.borrow() {
            return;
        }
        while *paused.borrow_and_update() {
            tokio::select! {
                _ = paused.changed() => {}
                _ = shutdown.changed() => return,
            }
        }
        let parts: Vec<Arc<Partition>> = targets
            .borrow_and_update()
            .get(&leader)
            .cloned()
            .unwrap_or_default();
        if parts.is_empty() {
            tracing::info!(leader, "replica fetcher stopped: nothing left to follow");
            return;
        }
        let round = async {
            if conn.is_none() {
                let addr = state
                    .meta
                    .state()
                    .brokers
                    .get(&leader)
                    .map(|b| format!("{}:{}", b.host, b.port))
                    .ok_or_else(|| format!("leader {leader} is not registered"))?;
                conn = Some(
                    Conn::connect(
                        &addr,
                        socket_timeout,
                        format!("fjord-replica-{}", state.config.node_id),
                    )
                    .await
                    .map_err(|e| format!("cannot connect to broker {leader} at {addr}: {e}"))?,
                );
            }
            let c = conn.as_mut().expect("connected above");
            fetch_round(
                &state,
                c,
                &parts,
                wait_ms,
                min_bytes,
                part_max,
                socket_timeout,
            )
            .await
        };
        let outcome = tokio::select! {
            r = round => r,
            _ = shutdown.changed() => return,
        };
        match outcome {
            Ok(()) => {}
            Err(reason) => {
                tracing::warn!(leader, %reason, "replica fetch failed; retrying");
                conn = None;
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = targets.changed() => {}
                    _ = shutdown.changed() => return,
                }
            }
        }
    }
}

/// One Fetch to the leader for `parts`, applying what comes back, then making it durable.
async fn fetch_round(
    state: &BrokerState,
    conn: &mut Conn,
    parts: &[Arc<Partition>],
    wait_ms: i32,
    min_bytes: i32,
    part_max: i32,
    socket_timeout: Duration,
) -> Result<(), String> {
    let node_id = state.config.node_id;
    // The follower throttle: throttled partitions ask for at most the bytes left in the budget, and none while it
    // is spent; the others are fetched as usual.
    let meta = state.meta.state();
    let rate = follower_rate(state, &meta);
    let mut throttled: Vec<&Arc<Partition>> = Vec::new();
    let mut budget = None;
    if let Some(rate) = rate {
        throttled = parts
            .iter()
            .filter(|p| follower_throttled(node_id, &meta, p))
            .collect();
        if !throttled.is_empty() {
            let (tokens, wait) = {
                let mut bucket = state
                    .replication
                    .throttle
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                let tokens = bucket.refill(rate, std::time::Instant::now());
                (tokens, bucket.wait())
            };
            if tokens >= 1.0 {
                budget = Some(tokens.min(i32::MAX as f64) as i32);
            } else if throttled.len() == parts.len() {
                // Nothing to fetch but throttled partitions: wait for the budget (at most a second at a time).
                let wait = wait.clamp(Duration::from_millis(10), Duration::from_secs(1));
                tokio::time::sleep(wait).await;
                return Ok(());
            }
        }
    }
    let is_throttled = |p: &Arc<Partition>| throttled.iter().any(|q| Arc::ptr_eq(p, q));
    let mut by_topic: BTreeMap<&str, Vec<(&Arc<Partition>, i32)>> = BTreeMap::new();
    for p in parts.iter().filter(|p| p.check_online().is_ok()) {
        if is_throttled(p) && budget.is_none() {
            continue;
        }
        by_topic
            .entry(p.topic.as_str())
            .or_default()
            .push((p, p.leader_epoch()));
    }
    let topics = by_topic
        .iter()
        .map(|(topic, ps)| {
            FetchTopic::default()
                .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partitions(
                    ps.iter()
                        .map(|(p, epoch)| {
                            let (start, _) = p.offsets();
                            let max = match budget {
                                Some(b) if is_throttled(p) => part_max.min(b),
                                _ => part_max,
                            };
                            FetchPartition::default()
                                .with_partition(p.index)
                                .with_current_leader_epoch(*epoch)
                                .with_fetch_offset(p.log_end_offset())
                                .with_last_fetched_epoch(p.latest_epoch())
                                .with_log_start_offset(start)
                                .with_partition_max_bytes(max)
                        })
                        .collect(),
                )
        })
        .collect();
    let req = FetchRequest::default()
        .with_replica_id(BrokerId(node_id))
        .with_max_wait_ms(wait_ms)
        .with_min_bytes(min_bytes)
        .with_max_bytes(prop_ms(state, "replica.fetch.response.max.bytes", 10 << 20) as i32)
        .with_isolation_level(0)
        .with_session_id(0)
        .with_session_epoch(-1)
        .with_topics(topics);
    let resp = tokio::time::timeout(
        socket_timeout + Duration::from_millis(wait_ms as u64),
        conn.request(FETCH_VERSION, &req, max_response(state)),
    )
    .await
    .map_err(|_| "the leader did not answer in time".to_string())?
    .map_err(|e| e.to_string())?;
    if resp.error_code != 0 {
        return Err(format!("fetch refused with error {}", resp.error_code));
    }
    let mut appended: Vec<Arc<Partition>> = Vec::new();
    let mut failed = 0usize;
    let mut throttled_bytes = 0usize;
    crate::blocking(|| {
        for t in &resp.responses {
            let Some(ps) = by_topic.get(&*t.topic.0) else {
                continue;
            };
            for pd in &t.partitions {
                let Some((p, epoch)) = ps.iter().find(|(p, _)| p.index == pd.partition_index)
                else {
                    continue;
                };
                if is_throttled(p) {
                    throttled_bytes += pd.records.as_ref().map_or(0, |r| r.len());
                }
                match apply(p, *epoch, pd) {
                    Ok(true) => appended.push((*p).clone()),
                    Ok(false) => {}
                    Err(e) => {
                        failed += 1;
                        tracing::debug!(topic = %p.topic, partition = p.index, error = %e, "replica fetch not applied")
                    }
                }
            }
        }
    });
    if throttled_bytes > 0 {
        state
            .replication
            .throttle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .charge(throttled_bytes);
    }
    if failed > 0 && appended.is_empty() {
        // Every partition was refused (e.g. the leader has not seen a new epoch yet): do not spin on the leader.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Durable before the next fetch reports these offsets to the leader: every appended partition, even when
    // one of them fails (its directory goes offline and it leaves the fetch).
    let mut failures = Vec::new();
    for p in appended {
        let leo = p.log_end_offset();
        if let Err(e) = p.wait_durable(leo).await {
            failures.push(format!("{}-{}: {e}", p.topic, p.index));
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("; "))
    }
}

/// Applies one partition's part of a fetch response. `Ok(true)` when records were appended.
pub(crate) fn apply(
    p: &Partition,
    epoch: i32,
    pd: &kafka_protocol::messages::fetch_response::PartitionData,
) -> crate::Result<bool> {
    use kafka_protocol::error::ResponseError as E;
    if pd.error_code == E::OffsetOutOfRange.code() {
        let ours = p.log_end_offset();
        if ours < pd.log_start_offset {
            p.restart_at_as_follower(pd.log_start_offset, epoch)?;
        } else if pd.high_watermark >= 0 && ours > pd.high_watermark {
            p.truncate_as_follower(pd.high_watermark, epoch)?;
        }
        return Ok(false);
    }
    if pd.error_code != 0 {
        return Err(crate::Error::Internal(format!(
            "the leader answered with error {}",
            pd.error_code
        )));
    }
    if pd.diverging_epoch.epoch >= 0 || pd.diverging_epoch.end_offset >= 0 {
        // Truncate to where our log and the leader's agree (Kafka's `getOffsetTruncationState`): with the
        // leader's epoch here too, the smaller end of it; without it, the end of our newest older epoch, and the
        // next fetch (carrying that epoch) finds the rest.
        let (leader_epoch, leader_end) = (pd.diverging_epoch.epoch, pd.diverging_epoch.end_offset);
        let ours_leo = p.log_end_offset();
        let (ours_epoch, ours_end) = p.end_offset_for_epoch(leader_epoch);
        let to = if leader_epoch < 0 || ours_epoch < 0 {
            leader_end.min(ours_leo)
        } else if ours_epoch == leader_epoch {
            ours_end.min(leader_end)
        } else {
            ours_end
        };
        p.truncate_as_follower(to.max(0), epoch)?;
        return Ok(false);
    }
    let mut appended = false;
    if let Some(records) = &pd.records {
        if !records.is_empty() {
            p.append_as_follower(records.clone(), epoch)?;
            appended = true;
        }
    }
    if pd.log_start_offset > 0 {
        p.follow_log_start(pd.log_start_offset)?;
    }
    p.set_follower_hw(pd.high_watermark);
    Ok(appended)
}
