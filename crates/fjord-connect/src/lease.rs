//! Which worker of a distributed group runs the connectors. For now one worker of a `group.id` runs all of
//! them (the active worker) and the others stand by: every worker joins the consumer group `group.id`
//! subscribed to the one-partition config topic, with the cooperative-sticky assignor, and the member the group
//! assigns partition 0 is the active one. When it dies (kill -9: its session expires after
//! `session.timeout.ms`) or leaves, the group gives partition 0 to a standby, which reads the config and
//! offsets topics to their end and runs every connector from its stored offsets. Losing partition 0 stops
//! every task (each commits what it sent) before the callback returns, so the next worker starts from there.
//!
//! This is a lease through the group protocol with the `consumer` protocol type, not Kafka Connect's own
//! `connect` protocol: Apache Kafka Connect workers cannot join the same `group.id` (the group refuses the
//! mismatched protocol), and tasks are not spread over workers (see README).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::{ClientConfig, ClientContext, TopicPartitionList};
use tokio::sync::mpsc;

use crate::distributed::ConfigLog;
use crate::worker::Worker;

/// What the lease needs to (de)activate its worker.
pub struct LeaseConfig {
    pub bootstrap: String,
    pub group_id: String,
    pub config_topic: String,
    pub offset_topic: String,
    pub session_timeout_ms: u64,
    pub heartbeat_interval_ms: u64,
}

struct LeaseContext {
    topic: String,
    worker: Arc<Worker>,
    runtime: tokio::runtime::Handle,
    events: mpsc::UnboundedSender<()>,
    /// Whether the group assigns this member partition 0 (as last told).
    owned: Arc<AtomicBool>,
}

impl ClientContext for LeaseContext {}

fn has_partition_0(tpl: &TopicPartitionList, topic: &str) -> bool {
    tpl.elements_for_topic(topic)
        .iter()
        .any(|e| e.partition() == 0)
}

impl ConsumerContext for LeaseContext {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            if has_partition_0(tpl, &self.topic) {
                self.owned.store(false, Ordering::SeqCst);
                // Synchronous: the next active worker is assigned only after this returns, so it starts from
                // the offsets every task of this one committed.
                self.runtime.block_on(self.worker.deactivate());
            }
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            if has_partition_0(tpl, &self.topic) {
                self.owned.store(true, Ordering::SeqCst);
                let _ = self.events.send(());
            } else {
                self.worker.mark_settled();
            }
        }
    }
}

/// The running lease; stopping it leaves the group, so a standby takes over at once.
pub struct Lease {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// The member's claim on partition 0, shared with the rebalance callbacks and the activation loop.
    owned: Arc<AtomicBool>,
}

impl Lease {
    /// Stops the worker's tasks and leaves the group (bounded: the coordinator may be unreachable).
    pub async fn stop(mut self, worker: &Worker) {
        // Given up first: an activation still retrying then cannot run the connectors again after the tasks
        // were stopped (`Worker::activate` checks this under the lock `deactivate` takes), which would leave
        // tasks to die at exit without their final commit.
        self.owned.store(false, Ordering::SeqCst);
        worker.deactivate().await;
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while !t.is_finished() && std::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// Joins the group; whenever it assigns this member partition 0 of the config topic, the worker becomes
/// active with what the topics hold.
pub fn join(config: LeaseConfig, worker: Arc<Worker>) -> Result<Lease, String> {
    let (events, mut rx) = mpsc::unbounded_channel();
    let owned = Arc::new(AtomicBool::new(false));
    let owned_by_lease = owned.clone();
    let ctx = LeaseContext {
        owned: owned.clone(),
        topic: config.config_topic.clone(),
        worker: worker.clone(),
        runtime: tokio::runtime::Handle::current(),
        events,
    };
    let consumer: BaseConsumer<LeaseContext> = ClientConfig::new()
        .set("bootstrap.servers", &config.bootstrap)
        .set("group.id", &config.group_id)
        .set(
            "client.id",
            format!("{CLIENT_ID_PREFIX}{}", worker.worker_id),
        )
        // The active worker keeps partition 0 when others join: connectors move only when it goes.
        .set("partition.assignment.strategy", "cooperative-sticky")
        .set("session.timeout.ms", config.session_timeout_ms.to_string())
        .set(
            "heartbeat.interval.ms",
            config.heartbeat_interval_ms.to_string(),
        )
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "latest")
        .create_with_context(ctx)
        .map_err(|e| format!("cannot create the group member of {}: {e}", config.group_id))?;
    consumer
        .subscribe(&[&config.config_topic])
        .map_err(|e| format!("cannot join the group {}: {e}", config.group_id))?;
    let stop = Arc::new(AtomicBool::new(false));
    // Heartbeats and rebalances run in the poll loop, on a thread of its own (the callbacks are synchronous).
    let stop_poll = stop.clone();
    let thread = std::thread::Builder::new()
        .name("connect-lease".into())
        .spawn(move || {
            while !stop_poll.load(Ordering::SeqCst) {
                let _ = consumer.poll(Duration::from_millis(100));
            }
            drop(consumer);
        })
        .map_err(|e| format!("cannot start the group thread: {e}"))?;
    tokio::spawn(async move {
        while rx.recv().await.is_some() {
            // Keep trying while the cluster is unavailable; a revocation meanwhile deactivates again.
            while owned.load(Ordering::SeqCst) && !worker.is_active() {
                match activate(&config, &worker, &owned).await {
                    Ok(()) => {
                        worker.mark_settled();
                        break;
                    }
                    Err(e) => {
                        tracing::warn!("could not take over the connectors yet: {e}");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
            }
        }
    });
    Ok(Lease {
        stop,
        thread: Some(thread),
        owned: owned_by_lease,
    })
}

async fn activate(
    config: &LeaseConfig,
    worker: &Arc<Worker>,
    owned: &AtomicBool,
) -> Result<(), String> {
    let (b, ct) = (config.bootstrap.clone(), config.config_topic.clone());
    let stored = tokio::task::spawn_blocking(move || ConfigLog::load(&b, &ct))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let (b, ot, offsets) = (
        config.bootstrap.clone(),
        config.offset_topic.clone(),
        worker.offsets.clone(),
    );
    tokio::task::spawn_blocking(move || offsets.reload_from_topic(&b, &ot))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let n = stored.len();
    worker.activate(stored, owned).await;
    tracing::info!(group = %config.group_id, connectors = n, "this worker now runs the group's connectors");
    Ok(())
}

/// The prefix of a worker's group client id; the rest is its REST address, which standbys forward to.
const CLIENT_ID_PREFIX: &str = "connect-worker-";

/// Finds the active worker of a group: the member whose assignment holds partition 0 of the config topic
/// (DescribeGroups), and its REST address from its client id.
pub struct ActiveLookup {
    client: BaseConsumer,
    group_id: String,
    config_topic: String,
}

impl ActiveLookup {
    pub fn new(
        bootstrap: &str,
        group_id: &str,
        config_topic: &str,
    ) -> Result<ActiveLookup, String> {
        let client: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .create()
            .map_err(|e| format!("cannot create a client for {bootstrap}: {e}"))?;
        Ok(ActiveLookup {
            client,
            group_id: group_id.to_string(),
            config_topic: config_topic.to_string(),
        })
    }

    /// The active worker's REST address (`host:port`), if the group has one. Blocking.
    pub fn active(&self) -> Option<String> {
        let groups = self
            .client
            .fetch_group_list(Some(&self.group_id), Duration::from_secs(5))
            .ok()?;
        for g in groups.groups() {
            for m in g.members() {
                let owns = m
                    .assignment()
                    .and_then(|a| assigned_partitions(a, &self.config_topic))
                    .is_some_and(|ps| ps.contains(&0));
                if owns {
                    return m
                        .client_id()
                        .strip_prefix(CLIENT_ID_PREFIX)
                        .map(str::to_string);
                }
            }
        }
        None
    }
}

/// The partitions of `topic` in a consumer protocol assignment (version, [topic, [partition]], user data).
fn assigned_partitions(bytes: &[u8], topic: &str) -> Option<Vec<i32>> {
    let mut r = bytes;
    let mut take = |n: usize| -> Option<&[u8]> {
        if r.len() < n {
            return None;
        }
        let (a, b) = r.split_at(n);
        r = b;
        Some(a)
    };
    let _version = take(2)?;
    let topics = i32::from_be_bytes(take(4)?.try_into().ok()?);
    let mut out = Vec::new();
    for _ in 0..topics.max(0) {
        let len = i16::from_be_bytes(take(2)?.try_into().ok()?);
        let name = take(len.max(0) as usize)?.to_vec();
        let n = i32::from_be_bytes(take(4)?.try_into().ok()?);
        for _ in 0..n.max(0) {
            let p = i32::from_be_bytes(take(4)?.try_into().ok()?);
            if name == topic.as_bytes() {
                out.push(p);
            }
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An activation that was still retrying when the worker shut down must not run the connectors after
    /// `Lease::stop` stopped them (their tasks would then die at exit without their final commit).
    #[tokio::test]
    async fn an_activation_after_the_lease_stopped_does_not_make_the_worker_active() {
        let dir = tempfile::tempdir().unwrap();
        let worker = crate::worker::test_worker(dir.path()).standing_by();
        // The group had assigned partition 0: the activation loop is about to (re)try.
        let owned = Arc::new(AtomicBool::new(true));
        let lease = Lease {
            stop: Arc::new(AtomicBool::new(false)),
            thread: None,
            owned: owned.clone(),
        };
        lease.stop(&worker).await;
        worker
            .activate(std::collections::BTreeMap::new(), &owned)
            .await;
        assert!(!worker.is_active());
    }

    #[test]
    fn a_consumer_assignment_is_read_and_a_short_one_refused() {
        // Version 1, topics [("other", [0]), ("cfg", [0, 3])], 2 bytes of user data.
        let mut b = vec![0, 1, 0, 0, 0, 2];
        for (t, ps) in [("other", vec![0i32]), ("cfg", vec![0, 3])] {
            b.extend((t.len() as i16).to_be_bytes());
            b.extend(t.as_bytes());
            b.extend((ps.len() as i32).to_be_bytes());
            for p in ps {
                b.extend(p.to_be_bytes());
            }
        }
        b.extend([0, 0, 0, 2, 9, 9]);
        assert_eq!(assigned_partitions(&b, "cfg"), Some(vec![0, 3]));
        assert_eq!(assigned_partitions(&b, "none"), Some(vec![]));
        assert_eq!(assigned_partitions(&b[..12], "cfg"), None);
    }
}
