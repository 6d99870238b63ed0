//! Several registry instances on one schemas topic: one primary, elected through the Kafka group protocol, as
//! Confluent's registry does with `leader.eligibility`.
//!
//! Every eligible instance joins the consumer group `group.id` (default `schema-registry`) subscribed to the
//! one-partition election topic `<schemas topic>_election`, with the cooperative-sticky assignor. The member the
//! group assigns partition 0 is the primary candidate: it opens the transactional producer of the schemas topic
//! ([`crate::store::transactional_id`]), whose `init_transactions` fences every earlier primary, then commits in
//! one transaction a NOOP to the schemas topic and its leader record (key: the group id; value: its advertised
//! URL and member id) to the election topic, and waits until its reader has applied that NOOP: it has read
//! every record an earlier primary committed, so the ids it assigns continue after the highest one. Only then
//! does it write. Every instance reads the election topic beside the schemas topic, so secondaries learn the
//! primary's URL from the leader record and forward writes there.
//!
//! Losing partition 0 (a rebalance, or the group expiring the member's session) demotes at once; a write
//! fenced at commit demotes too. The guarantee that two instances never both commit an id does not rest on
//! the group (two members can briefly both believe they own partition 0): it rests on the fence.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::producer::{FutureProducer, Producer};
use rdkafka::{ClientConfig, ClientContext, TopicPartitionList};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::error::Result;
use crate::store::{failure, store_err, transact, transactional_id, Shared, TRANSACTION_TIMEOUT};

/// Confluent's default `schema.registry.group.id`.
pub const DEFAULT_GROUP_ID: &str = "schema-registry";

/// How an instance takes part in the election.
#[derive(Clone, Debug)]
pub struct ElectionConfig {
    /// The consumer group of the registry instances that share a schemas topic.
    pub group_id: String,
    /// The URL other instances forward writes to (`http://host:port`).
    pub advertised_url: String,
    /// `leader.eligibility`: false makes a read-only follower that never becomes primary.
    pub eligible: bool,
    /// This instance's id (in its leader record), new at every start.
    pub member: String,
}

impl ElectionConfig {
    pub fn new(group_id: &str, advertised_url: &str, eligible: bool) -> ElectionConfig {
        ElectionConfig {
            group_id: group_id.to_string(),
            advertised_url: advertised_url.trim_end_matches('/').to_string(),
            eligible,
            member: uuid::Uuid::new_v4().to_string(),
        }
    }
}

/// The value of a leader record in the election topic.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderRecord {
    pub url: String,
    pub member: String,
}

/// The election topic of a schemas topic.
pub fn election_topic(schemas_topic: &str) -> String {
    format!("{schemas_topic}_election")
}

/// What the group told this member; `generation` counts every change of ownership of partition 0, so that
/// a promotion started under one assignment is dropped when the assignment changed meanwhile.
struct Ownership {
    owned: AtomicBool,
    generation: AtomicU64,
}

impl Ownership {
    fn set(&self, owned: bool) -> u64 {
        self.owned.store(owned, Ordering::SeqCst);
        self.generation.fetch_add(1, Ordering::SeqCst) + 1
    }
    fn still(&self, generation: u64) -> bool {
        self.owned.load(Ordering::SeqCst) && self.generation.load(Ordering::SeqCst) == generation
    }
}

struct ElectionContext {
    shared: Arc<Shared>,
    topic: String,
    ownership: Arc<Ownership>,
    events: mpsc::UnboundedSender<u64>,
}

impl ClientContext for ElectionContext {}

fn has_partition_0(tpl: &TopicPartitionList, topic: &str) -> bool {
    tpl.elements_for_topic(topic)
        .iter()
        .any(|e| e.partition() == 0)
}

impl ConsumerContext for ElectionContext {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            if has_partition_0(tpl, &self.topic) {
                self.ownership.set(false);
                demote(
                    &self.shared,
                    None,
                    "the group assigned the election to another member",
                );
            }
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            if has_partition_0(tpl, &self.topic) {
                let generation = self.ownership.set(true);
                let _ = self.events.send(generation);
            }
        }
    }
}

/// Stops this instance writing with `producer` (if it still is its producer).
pub(crate) fn demote(shared: &Shared, producer: Option<&FutureProducer>, why: &str) {
    let mut removed = None;
    shared.primary.send_if_modified(|p| {
        let same = match (p.as_ref(), producer) {
            (Some(q), Some(producer)) => {
                std::ptr::eq(q.client().native_ptr(), producer.client().native_ptr())
            }
            (Some(_), None) => true,
            (None, _) => false,
        };
        if same {
            removed = p.take();
        }
        same
    });
    if let Some(p) = removed {
        tracing::warn!(group = %shared.election.group_id, "this registry is no longer the primary: {why}");
        // Destroying a producer can block (it flushes and closes its connections): not on the election's poll
        // thread, whose heartbeats keep the group membership, nor on the runtime.
        std::thread::spawn(move || drop(p));
    }
}

/// The running election of an instance; stopping it leaves the group (another instance takes over at once
/// instead of after the session timeout).
pub struct Handle {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Handle {
    /// Leaves the group; with `wait`, returns once the consumer has left (a few seconds at most).
    pub fn stop(mut self, wait: bool) {
        self.stop.store(true, Ordering::SeqCst);
        self.task.abort();
        // Bounded: leaving needs the group coordinator, which may be unreachable.
        if let (true, Some(t)) = (wait, self.thread.take()) {
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while !t.is_finished() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// Joins the group of `shared.election` and keeps promoting this instance whenever it is assigned the
/// election partition.
pub(crate) fn join(shared: Arc<Shared>) -> Result<Handle> {
    let topic = election_topic(&shared.topic);
    let ownership = Arc::new(Ownership {
        owned: AtomicBool::new(false),
        generation: AtomicU64::new(0),
    });
    let (events, mut rx) = mpsc::unbounded_channel();
    let ctx = ElectionContext {
        shared: shared.clone(),
        topic: topic.clone(),
        ownership: ownership.clone(),
        events: events.clone(),
    };
    let consumer: BaseConsumer<ElectionContext> = ClientConfig::new()
        .set("bootstrap.servers", &shared.bootstrap)
        .set("group.id", &shared.election.group_id)
        .set(
            "client.id",
            format!("fjord-registry {}", shared.election.advertised_url),
        )
        // The owner keeps partition 0 when members join or leave: the primary changes only when it goes.
        .set("partition.assignment.strategy", "cooperative-sticky")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "1000")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "latest")
        .create_with_context(ctx)
        .map_err(|e| store_err("cannot create the election consumer", e))?;
    consumer
        .subscribe(&[&topic])
        .map_err(|e| store_err(&format!("cannot subscribe to {topic}"), e))?;
    let stop = Arc::new(AtomicBool::new(false));
    // The group's heartbeats and rebalances run in the poll loop, on a thread of its own: the rebalance
    // callbacks are synchronous.
    let stop_poll = stop.clone();
    let thread = std::thread::Builder::new()
        .name("registry-election".into())
        .spawn(move || {
            while !stop_poll.load(Ordering::SeqCst) {
                let _ = consumer.poll(Duration::from_millis(100));
            }
            // Dropping the consumer closes it: it leaves the group, and the revocation demotes.
            drop(consumer);
            tracing::info!("left the registry group");
        })
        .map_err(|e| store_err("cannot start the election thread", e))?;
    tracing::info!(
        group = %shared.election.group_id,
        url = %shared.election.advertised_url,
        "joined the election of the registry group"
    );
    let (shared_task, ownership_task) = (shared.clone(), ownership.clone());
    let task = tokio::spawn(async move {
        let (shared, ownership) = (shared_task, ownership_task);
        while let Some(generation) = rx.recv().await {
            if shared.primary.borrow().is_some() {
                continue;
            }
            // Keep trying while the group still assigns this member the election (the cluster may be
            // unavailable for a while).
            while ownership.still(generation) {
                match promote(&shared, &ownership, generation).await {
                    Ok(()) => break,
                    Err(e) => {
                        tracing::warn!("could not become the primary yet: {e}");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
            }
        }
    });
    // A primary whose producer failed for good is promoted again, with a new producer, if it still owns the
    // election after the delay.
    let runtime = tokio::runtime::Handle::current();
    let owner = ownership.clone();
    let _ = shared.repromote.set(Box::new(move |delay| {
        let generation = owner.generation.load(Ordering::SeqCst);
        let (owner, events) = (owner.clone(), events.clone());
        runtime.spawn(async move {
            tokio::time::sleep(delay).await;
            if owner.still(generation) {
                let _ = events.send(generation);
            }
        });
    }));
    Ok(Handle {
        stop,
        task,
        thread: Some(thread),
    })
}

/// Fences the earlier primaries, reads the schemas topic to its end and publishes this instance as primary.
async fn promote(shared: &Arc<Shared>, ownership: &Ownership, generation: u64) -> Result<()> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &shared.bootstrap)
        .set("transactional.id", transactional_id(&shared.topic))
        .set(
            "transaction.timeout.ms",
            TRANSACTION_TIMEOUT.as_millis().to_string(),
        )
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "0")
        .set(
            "message.timeout.ms",
            crate::store::WRITE_TIMEOUT.as_millis().to_string(),
        )
        .create()
        .map_err(|e| store_err("cannot create the transactional producer", e))?;
    let p = producer.clone();
    tokio::task::spawn_blocking(move || p.init_transactions(Duration::from_secs(30)))
        .await
        .map_err(|e| store_err("init_transactions", e))?
        .map_err(|e| store_err("cannot fence the earlier primaries (init_transactions)", e))?;
    if !ownership.still(generation) {
        return Ok(());
    }
    let noop = serde_json::to_vec(&crate::records::Key::Noop { magic: 0 })
        .map_err(|e| store_err("noop key", e))?;
    let leader = serde_json::to_vec(&LeaderRecord {
        url: shared.election.advertised_url.clone(),
        member: shared.election.member.clone(),
    })
    .map_err(|e| store_err("leader record", e))?;
    let topic = election_topic(&shared.topic);
    let offsets = transact(
        &producer,
        &[
            (shared.topic.as_str(), &noop, None),
            (
                topic.as_str(),
                shared.election.group_id.as_bytes(),
                Some(&leader),
            ),
        ],
    )
    .await
    .map_err(|e| {
        let failure = failure(&producer, &e);
        store_err(
            &format!("cannot publish the leader record ({failure:?})"),
            e,
        )
    })?;
    shared
        .wait_applied(offsets[0] + 1, crate::store::INIT_TIMEOUT)
        .await?;
    if !ownership.still(generation) {
        return Ok(());
    }
    shared.primary.send_replace(Some(producer));
    tracing::info!(
        group = %shared.election.group_id,
        url = %shared.election.advertised_url,
        "this registry is now the primary: it read {} to its end and writes with transactional id {}",
        shared.topic,
        transactional_id(&shared.topic)
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_promotion_is_valid_only_for_the_assignment_it_started_under() {
        let o = Ownership {
            owned: AtomicBool::new(false),
            generation: AtomicU64::new(0),
        };
        let g1 = o.set(true);
        assert!(o.still(g1));
        // Revoked and assigned again while the first promotion was running: that promotion must not publish.
        o.set(false);
        assert!(!o.still(g1));
        let g2 = o.set(true);
        assert!(!o.still(g1));
        assert!(o.still(g2));
        o.set(false);
        assert!(!o.still(g2));
    }

    #[test]
    fn the_election_topic_and_transactional_id_follow_the_schemas_topic() {
        assert_eq!(election_topic("_schemas"), "_schemas_election");
        assert_eq!(
            transactional_id("_schemas"),
            "fjord-schema-registry._schemas"
        );
        let c = ElectionConfig::new("g", "http://h:1/", true);
        assert_eq!(c.advertised_url, "http://h:1");
        assert_ne!(
            c.member,
            ElectionConfig::new("g", "http://h:1", true).member
        );
    }
}
