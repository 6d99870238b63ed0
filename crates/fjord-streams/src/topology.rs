//! The DSL: [`StreamsBuilder`] builds a [`Topology`] (a graph of operators) through [`KStream`],
//! [`KGroupedStream`], [`WindowedKStream`] and [`KTable`] handles. Building does no I/O; the runtime
//! ([`crate::KafkaStreams`]) runs a topology against a cluster.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;

use crate::error::{Error, Result};
use crate::record::{Record, TimestampExtractor};
use crate::window::{JoinWindows, SessionWindows, TimeWindows, Windows};

pub(crate) type NodeId = usize;
type MapFn = Arc<dyn Fn(Record) -> Record + Send + Sync>;
type PredicateFn = Arc<dyn Fn(&Record) -> bool + Send + Sync>;
/// Emits zero or more records for one, or refuses it (`Err`: the reason).
type FlatMapFn =
    Arc<dyn Fn(Record, &mut dyn FnMut(Record)) -> std::result::Result<(), String> + Send + Sync>;
type InitFn = Arc<dyn Fn() -> Bytes + Send + Sync>;
type AddFn = Arc<dyn Fn(&[u8], &Record, &[u8]) -> Bytes + Send + Sync>;
type MergeFn = Arc<dyn Fn(&[u8], &[u8], &[u8]) -> Bytes + Send + Sync>;
type ReduceFn = Arc<dyn Fn(&[u8], &[u8]) -> Bytes + Send + Sync>;
type JoinFn = Arc<dyn Fn(&Record, Option<&[u8]>) -> Bytes + Send + Sync>;
type PairFn = Arc<dyn Fn(&Record, &Record) -> Bytes + Send + Sync>;
/// An outer join's result for a record of one side that found no partner.
pub(crate) type UnmatchedFn = Arc<dyn Fn(&Record) -> Bytes + Send + Sync>;

/// A topic a node reads or writes: a user topic, or one the library names after the application id.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum TopicRef {
    User(String),
    /// `<application.id>-<name>-repartition`.
    Repartition(String),
}

/// How an aggregate folds a record into the value it keeps per key (and window).
#[derive(Clone)]
pub(crate) enum Aggregation {
    /// An `i64` (8 bytes big-endian) incremented per record.
    Count,
    /// `reduce(aggregate, value)`; the first value is kept as is. Also merges sessions.
    Reduce(ReduceFn),
    /// `add(key, record, aggregate)` from `init()`; `merge(key, a, b)` joins two sessions.
    Aggregate {
        init: InitFn,
        add: AddFn,
        merge: Option<MergeFn>,
    },
    /// A table read from a topic: the latest value per key; a null value deletes the key.
    Latest,
    /// The records one side of a stream-stream join keeps, keyed by (key, timestamp, offset); written only by
    /// the join nodes.
    Buffer,
}

#[derive(Clone)]
pub(crate) enum NodeKind {
    Source {
        topic: TopicRef,
        extractor: Option<TimestampExtractor>,
    },
    Map(MapFn),
    Filter(PredicateFn),
    FlatMap(FlatMapFn),
    /// Sends each record to the first child whose predicate (same index) matches.
    Branch(Vec<PredicateFn>),
    /// Forwards unchanged (merge points, branch outputs, table-to-stream).
    Pass,
    Sink {
        topic: TopicRef,
    },
    Aggregate(AggregateNode),
    /// Looks the record's key up in the table kept by aggregate node `table` (same task) and emits
    /// `joiner(record, value)`; without a match: nothing (inner) or `joiner(record, None)` (left join).
    Join {
        table: NodeId,
        joiner: JoinFn,
        left: bool,
    },
    /// One side of a windowed stream-stream join: buffers the record in store node `own`, joins it with the
    /// records of store node `other` within the window and emits `joiner(left, right)` for each.
    StreamJoin {
        own: NodeId,
        other: NodeId,
        windows: JoinWindows,
        joiner: PairFn,
        is_left: bool,
        /// Outer on this side: a buffered record that has no partner once its window and grace have passed
        /// (stream time at or after its timestamp + diff + grace) is emitted as `unmatched(record)`.
        unmatched: Option<UnmatchedFn>,
    },
}

#[derive(Clone)]
pub(crate) struct AggregateNode {
    pub store: String,
    pub windows: Option<Windows>,
    pub agg: Aggregation,
    /// `suppress(until window closes)`: emit one final result per window instead of every update.
    pub emit_final: bool,
    /// How long after it closes a window stays in the store (for queries) before it is deleted.
    pub retention_ms: i64,
}

#[derive(Clone)]
pub(crate) struct Node {
    pub kind: NodeKind,
    pub children: Vec<NodeId>,
}

#[derive(Default)]
struct Graph {
    nodes: Vec<Node>,
    errors: Vec<String>,
}

impl Graph {
    fn add(&mut self, kind: NodeKind, parents: &[NodeId]) -> NodeId {
        let id = self.nodes.len();
        self.nodes.push(Node {
            kind,
            children: Vec::new(),
        });
        for &p in parents {
            self.nodes[p].children.push(id);
        }
        id
    }
}

/// Builds a topology. Cheap to clone: every handle shares the one graph.
#[derive(Clone, Default)]
pub struct StreamsBuilder {
    graph: Arc<Mutex<Graph>>,
}

/// Source options: where event time comes from.
#[derive(Clone, Default)]
pub struct Consumed {
    extractor: Option<TimestampExtractor>,
}

impl Consumed {
    /// Event time from `f` instead of the Kafka record's timestamp.
    pub fn with_timestamp_extractor(
        f: impl Fn(&Record) -> i64 + Send + Sync + 'static,
    ) -> Consumed {
        Consumed {
            extractor: Some(Arc::new(f)),
        }
    }
}

impl StreamsBuilder {
    pub fn new() -> StreamsBuilder {
        StreamsBuilder::default()
    }

    /// A stream of the records of `topic`, event time from the record timestamps.
    pub fn stream(&self, topic: &str) -> KStream {
        self.stream_with(topic, Consumed::default())
    }

    /// A stream of the records of `topic` with source options.
    pub fn stream_with(&self, topic: &str, consumed: Consumed) -> KStream {
        let mut g = self.graph.lock().unwrap();
        if let Err(e) = check_topic_name(topic) {
            g.errors.push(e);
        }
        let id = g.add(
            NodeKind::Source {
                topic: TopicRef::User(topic.to_string()),
                extractor: consumed.extractor,
            },
            &[],
        );
        KStream {
            b: self.clone(),
            node: id,
        }
    }

    /// A table of the latest value per key of `topic` (normally a compacted topic; a null value deletes the
    /// key), materialized in store `store`. It must be co-partitioned with the streams joined to it.
    pub fn table(&self, topic: &str, store: &str) -> KTable {
        let stream = self.stream(topic);
        stream
            .group_by_key()
            .aggregate_node(store, None, Aggregation::Latest)
    }

    /// The finished topology, or the first mistake made while building it.
    pub fn build(&self) -> Result<Topology> {
        let g = self.graph.lock().unwrap();
        if let Some(e) = g.errors.first() {
            return Err(Error::Topology(e.clone()));
        }
        Topology::new(g.nodes.clone())
    }

    fn add(&self, kind: NodeKind, parents: &[NodeId]) -> NodeId {
        self.graph.lock().unwrap().add(kind, parents)
    }

    fn error(&self, e: String) {
        self.graph.lock().unwrap().errors.push(e);
    }

    fn set_emit_final(&self, node: NodeId) -> bool {
        let mut g = self.graph.lock().unwrap();
        match &mut g.nodes[node].kind {
            NodeKind::Aggregate(a) if a.windows.is_some() => {
                a.emit_final = true;
                true
            }
            _ => false,
        }
    }
}

/// A stream of records.
#[derive(Clone)]
pub struct KStream {
    b: StreamsBuilder,
    node: NodeId,
}

impl KStream {
    fn then(&self, kind: NodeKind) -> KStream {
        KStream {
            b: self.b.clone(),
            node: self.b.add(kind, &[self.node]),
        }
    }

    /// Replaces each record (key, value and timestamp may change; a key change before an aggregation needs
    /// [`KStream::group_by`] so that equal keys meet in one partition).
    pub fn map(&self, f: impl Fn(Record) -> Record + Send + Sync + 'static) -> KStream {
        self.then(NodeKind::Map(Arc::new(f)))
    }

    /// Replaces each record's value.
    pub fn map_values(
        &self,
        f: impl Fn(&Record) -> Option<Bytes> + Send + Sync + 'static,
    ) -> KStream {
        self.map(move |mut r| {
            r.value = f(&r);
            r
        })
    }

    /// Keeps the records for which `f` is true.
    pub fn filter(&self, f: impl Fn(&Record) -> bool + Send + Sync + 'static) -> KStream {
        self.then(NodeKind::Filter(Arc::new(f)))
    }

    /// Replaces each record by zero or more records.
    pub fn flat_map<I>(&self, f: impl Fn(Record) -> I + Send + Sync + 'static) -> KStream
    where
        I: IntoIterator<Item = Record>,
    {
        self.then(NodeKind::FlatMap(Arc::new(move |r, emit| {
            for out in f(r) {
                emit(out)
            }
            Ok(())
        })))
    }

    /// Replaces each record by zero or more records, or refuses it: `Err(reason)` stops the application
    /// ([`Error::Record`](crate::Error::Record), state `Failed`). **Exactly once** nothing it processed since its
    /// last commit is committed (the open transaction is aborted), so the next start reads the refused record
    /// again, and stops at it again until the cause is gone. **At least once** the records before it are
    /// committed (those whose outputs were acknowledged; a task's state only if the refused record had not
    /// written to it yet, else the task goes back to its last commit) and the refused record is not, so the next
    /// start reads it again without sending the records before it again (see `Engine::abandon`).
    pub fn try_flat_map<I>(
        &self,
        f: impl Fn(Record) -> std::result::Result<I, String> + Send + Sync + 'static,
    ) -> KStream
    where
        I: IntoIterator<Item = Record>,
    {
        self.then(NodeKind::FlatMap(Arc::new(move |r, emit| {
            for out in f(r)? {
                emit(out)
            }
            Ok(())
        })))
    }

    /// Splits the stream: each record goes to the stream of the first predicate it satisfies, or nowhere.
    #[allow(clippy::type_complexity)]
    pub fn branch(
        &self,
        predicates: Vec<Box<dyn Fn(&Record) -> bool + Send + Sync>>,
    ) -> Vec<KStream> {
        let preds: Vec<PredicateFn> = predicates.into_iter().map(Arc::from).collect();
        let n = preds.len();
        let branch = self.b.add(NodeKind::Branch(preds), &[self.node]);
        (0..n)
            .map(|_| KStream {
                b: self.b.clone(),
                node: self.b.add(NodeKind::Pass, &[branch]),
            })
            .collect()
    }

    /// One stream with the records of both.
    pub fn merge(&self, other: &KStream) -> KStream {
        KStream {
            b: self.b.clone(),
            node: self.b.add(NodeKind::Pass, &[self.node, other.node]),
        }
    }

    /// Writes every record to `topic` (which must exist), partitioned by key like the Java client (murmur2).
    pub fn to(&self, topic: &str) {
        if let Err(e) = check_topic_name(topic) {
            self.b.error(e);
        }
        self.b.add(
            NodeKind::Sink {
                topic: TopicRef::User(topic.to_string()),
            },
            &[self.node],
        );
    }

    /// Inner join with a table on the record key: for each record whose key the table holds, emits the record
    /// with value `joiner(record, table value)`. Records and table updates are processed in arrival order (no
    /// event-time synchronization between the two topics).
    pub fn join(
        &self,
        table: &KTable,
        joiner: impl Fn(&Record, &[u8]) -> Bytes + Send + Sync + 'static,
    ) -> KStream {
        self.join_node(
            table,
            false,
            Arc::new(move |r, v| joiner(r, v.unwrap_or_default())),
        )
    }

    /// Left join with a table: like [`KStream::join`], and records without a match get `joiner(record, None)`.
    pub fn left_join(
        &self,
        table: &KTable,
        joiner: impl Fn(&Record, Option<&[u8]>) -> Bytes + Send + Sync + 'static,
    ) -> KStream {
        self.join_node(table, true, Arc::new(joiner))
    }

    /// Windowed inner join of two streams on the key: each pair of records with equal keys whose timestamps
    /// differ by at most the window's `diff` gives one record `joiner(left, right)` (timestamp: the later of
    /// the two), emitted when the second of the pair arrives. Both streams must be co-partitioned; their
    /// records are buffered in stores `<name>-left` and `<name>-right`.
    pub fn join_windowed(
        &self,
        other: &KStream,
        name: &str,
        windows: JoinWindows,
        joiner: impl Fn(&Record, &Record) -> Bytes + Send + Sync + 'static,
    ) -> KStream {
        self.windowed_join(other, name, windows, Arc::new(joiner), [None, None])
    }

    /// Windowed outer join of two streams: left (`[true, false]`), right (`[false, true]`) or full (`[true,
    /// true]`). The pairs of [`KStream::join_windowed`] come as `joiner(Some(left), Some(right))`; a record of an
    /// outer side that found no partner gives `joiner(Some(left), None)` (or `joiner(None, Some(right))`) with
    /// its timestamp, emitted only once its window has closed (stream time at or after its timestamp + diff +
    /// grace), so that a record whose partner comes later gives no spurious unmatched result (Kafka Streams'
    /// behaviour since 3.1, ksqlDB's since 0.25).
    pub fn outer_join_windowed(
        &self,
        other: &KStream,
        name: &str,
        windows: JoinWindows,
        [left_outer, right_outer]: [bool; 2],
        joiner: impl Fn(Option<&Record>, Option<&Record>) -> Bytes + Send + Sync + 'static,
    ) -> KStream {
        let joiner = Arc::new(joiner);
        let (j1, j2, j3) = (joiner.clone(), joiner.clone(), joiner);
        let left: Option<UnmatchedFn> =
            left_outer.then(|| -> UnmatchedFn { Arc::new(move |r: &Record| j2(Some(r), None)) });
        let right: Option<UnmatchedFn> =
            right_outer.then(|| -> UnmatchedFn { Arc::new(move |r: &Record| j3(None, Some(r))) });
        self.windowed_join(
            other,
            name,
            windows,
            Arc::new(move |l: &Record, r: &Record| j1(Some(l), Some(r))),
            [left, right],
        )
    }

    fn windowed_join(
        &self,
        other: &KStream,
        name: &str,
        windows: JoinWindows,
        joiner: PairFn,
        [unmatched_left, unmatched_right]: [Option<UnmatchedFn>; 2],
    ) -> KStream {
        if windows.diff_ms < 0 || windows.grace_ms < 0 {
            self.b.error(format!("join `{name}`: negative window"));
        }
        let buffer = |side: &str| {
            let store = format!("{name}-{side}");
            if let Err(e) = check_name(&store) {
                self.b.error(e);
            }
            self.b.add(
                NodeKind::Aggregate(AggregateNode {
                    store,
                    windows: None,
                    agg: Aggregation::Buffer,
                    emit_final: false,
                    retention_ms: windows.retention_ms(),
                }),
                &[],
            )
        };
        let (l, r) = (buffer("left"), buffer("right"));
        let side = |own, oth, is_left, parent, unmatched| {
            self.b.add(
                NodeKind::StreamJoin {
                    own,
                    other: oth,
                    windows,
                    joiner: joiner.clone(),
                    is_left,
                    unmatched,
                },
                &[parent],
            )
        };
        let ls = side(l, r, true, self.node, unmatched_left);
        let rs = side(r, l, false, other.node, unmatched_right);
        KStream {
            b: self.b.clone(),
            node: self.b.add(NodeKind::Pass, &[ls, rs]),
        }
    }

    fn join_node(&self, table: &KTable, left: bool, joiner: JoinFn) -> KStream {
        if table.windowed {
            self.b
                .error("a stream can join an unwindowed table only".into());
        }
        self.then(NodeKind::Join {
            table: table.node,
            joiner,
            left,
        })
    }

    /// Groups by the current key (the input must already be partitioned by it).
    pub fn group_by_key(&self) -> KGroupedStream {
        KGroupedStream {
            b: self.b.clone(),
            node: self.node,
        }
    }

    /// Groups by a new key: records go through the repartition topic `<application.id>-<name>-repartition` so
    /// that all records of one key are processed by one task.
    pub fn group_by(
        &self,
        name: &str,
        f: impl Fn(&Record) -> Bytes + Send + Sync + 'static,
    ) -> KGroupedStream {
        let rekeyed = self.repartition(name, f);
        KGroupedStream {
            b: self.b.clone(),
            node: rekeyed.node,
        }
    }

    /// Re-keys each record with `f` and sends it through the repartition topic
    /// `<application.id>-<name>-repartition`, so that the records of one new key are processed by one task
    /// (before a join on the new key, for example).
    pub fn repartition(
        &self,
        name: &str,
        f: impl Fn(&Record) -> Bytes + Send + Sync + 'static,
    ) -> KStream {
        if let Err(e) = check_name(name) {
            self.b.error(e);
        }
        let rekeyed = self.map(move |mut r| {
            r.key = Some(f(&r));
            r
        });
        let topic = TopicRef::Repartition(name.to_string());
        self.b.add(
            NodeKind::Sink {
                topic: topic.clone(),
            },
            &[rekeyed.node],
        );
        let src = self.b.add(
            NodeKind::Source {
                topic,
                extractor: None,
            },
            &[],
        );
        KStream {
            b: self.b.clone(),
            node: src,
        }
    }

    /// The table of the latest value per key of this stream (a null value deletes the key), materialized in
    /// store `store`: [`StreamsBuilder::table`] with steps of your own before the store (the stream must still
    /// be partitioned by its key).
    pub fn to_table(&self, store: &str) -> KTable {
        self.group_by_key()
            .aggregate_node(store, None, Aggregation::Latest)
    }
}

/// A stream grouped by key, ready to aggregate. Records with a null key or value are dropped by aggregations
/// (counted in [`crate::MetricsSnapshot::dropped_null_records`]).
#[derive(Clone)]
pub struct KGroupedStream {
    b: StreamsBuilder,
    node: NodeId,
}

impl KGroupedStream {
    fn aggregate_node(&self, store: &str, windows: Option<Windows>, agg: Aggregation) -> KTable {
        if let Err(e) = check_name(store) {
            self.b.error(e);
        }
        let node = self.b.add(
            NodeKind::Aggregate(AggregateNode {
                store: store.to_string(),
                windows,
                agg,
                emit_final: false,
                retention_ms: DEFAULT_RETENTION_MS,
            }),
            &[self.node],
        );
        KTable {
            b: self.b.clone(),
            node,
            windowed: windows.is_some(),
        }
    }

    /// Records per key, kept in store `store` (values: 8-byte big-endian `i64`).
    pub fn count(&self, store: &str) -> KTable {
        self.aggregate_node(store, None, Aggregation::Count)
    }

    /// Combines the values of a key with `f(aggregate, value)`.
    pub fn reduce(
        &self,
        store: &str,
        f: impl Fn(&[u8], &[u8]) -> Bytes + Send + Sync + 'static,
    ) -> KTable {
        self.aggregate_node(store, None, Aggregation::Reduce(Arc::new(f)))
    }

    /// Folds the records of a key into `add(key, record, aggregate)`, starting from `init()`.
    pub fn aggregate(
        &self,
        store: &str,
        init: impl Fn() -> Bytes + Send + Sync + 'static,
        add: impl Fn(&[u8], &Record, &[u8]) -> Bytes + Send + Sync + 'static,
    ) -> KTable {
        self.aggregate_node(
            store,
            None,
            Aggregation::Aggregate {
                init: Arc::new(init),
                add: Arc::new(add),
                merge: None,
            },
        )
    }

    /// Aggregates per key and window.
    pub fn windowed_by(&self, windows: impl Into<Windows>) -> WindowedKStream {
        let windows = windows.into();
        let check = match windows {
            Windows::Time(t) => t.validate(),
            Windows::Session(s) => s.validate(),
        };
        if let Err(e) = check {
            self.b.error(e);
        }
        WindowedKStream {
            g: self.clone(),
            windows,
            retention_ms: DEFAULT_RETENTION_MS,
        }
    }
}

/// Kafka's default: a closed window stays queryable for a day.
const DEFAULT_RETENTION_MS: i64 = 24 * 3600 * 1000;

/// A grouped stream with windows. Results are keyed by [`crate::WindowedKey`].
#[derive(Clone)]
pub struct WindowedKStream {
    g: KGroupedStream,
    windows: Windows,
    retention_ms: i64,
}

impl WindowedKStream {
    /// How long a window is kept in the store after it closes (default one day).
    pub fn retention(mut self, d: Duration) -> WindowedKStream {
        self.retention_ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        self
    }

    fn table(&self, store: &str, agg: Aggregation) -> KTable {
        let t = self.g.aggregate_node(store, Some(self.windows), agg);
        let mut g = self.g.b.graph.lock().unwrap();
        if let NodeKind::Aggregate(a) = &mut g.nodes[t.node].kind {
            a.retention_ms = self.retention_ms;
        }
        drop(g);
        t
    }

    /// Records per key and window.
    pub fn count(&self, store: &str) -> KTable {
        self.table(store, Aggregation::Count)
    }

    /// Combines the values of a key in a window (and merges sessions) with `f(aggregate, value)`.
    pub fn reduce(
        &self,
        store: &str,
        f: impl Fn(&[u8], &[u8]) -> Bytes + Send + Sync + 'static,
    ) -> KTable {
        self.table(store, Aggregation::Reduce(Arc::new(f)))
    }

    /// Folds the records of a key in a window. Session windows need `merge(key, a, b)` to join two sessions a
    /// record bridges; time windows ignore it (pass `None`).
    #[allow(clippy::type_complexity)]
    pub fn aggregate(
        &self,
        store: &str,
        init: impl Fn() -> Bytes + Send + Sync + 'static,
        add: impl Fn(&[u8], &Record, &[u8]) -> Bytes + Send + Sync + 'static,
        merge: Option<Box<dyn Fn(&[u8], &[u8], &[u8]) -> Bytes + Send + Sync>>,
    ) -> KTable {
        if matches!(self.windows, Windows::Session(_)) && merge.is_none() {
            self.g.b.error(format!(
                "aggregate `{store}` over session windows needs a merge function"
            ));
        }
        self.table(
            store,
            Aggregation::Aggregate {
                init: Arc::new(init),
                add: Arc::new(add),
                merge: merge.map(Arc::from),
            },
        )
    }
}

/// When `suppress` lets results through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Suppressed {
    /// One final result per window, once stream time passes the window's close time (end + grace).
    UntilWindowCloses,
}

/// A changelog stream of the latest value per key: the result of an aggregation.
#[derive(Clone)]
pub struct KTable {
    b: StreamsBuilder,
    node: NodeId,
    windowed: bool,
}

impl KTable {
    /// The updates of the table as a stream (windowed tables: keys in the [`crate::WindowedKey`] format).
    pub fn to_stream(&self) -> KStream {
        KStream {
            b: self.b.clone(),
            node: self.b.add(NodeKind::Pass, &[self.node]),
        }
    }

    /// Emits only final results. Only windowed aggregations can be suppressed (a `build()` error otherwise).
    pub fn suppress(&self, _until: Suppressed) -> KTable {
        if !self.windowed || !self.b.set_emit_final(self.node) {
            self.b.error(
                "suppress(until window closes) applies to a windowed aggregation only".into(),
            );
        }
        self.clone()
    }

    /// Writes the table's updates (or final results) to `topic`.
    pub fn to(&self, topic: &str) {
        self.to_stream().to(topic)
    }
}

fn check_name(name: &str) -> std::result::Result<(), String> {
    if name.is_empty()
        || name.len() > 180
        || !name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'.' || c == b'_' || c == b'-')
    {
        return Err(format!(
            "name `{name}` must be 1-180 characters of [A-Za-z0-9._-] (it names topics and store directories)"
        ));
    }
    Ok(())
}

fn check_topic_name(name: &str) -> std::result::Result<(), String> {
    if name.len() > 249 {
        return Err(format!("topic name `{name}` is longer than 249 characters"));
    }
    check_name(&name[..name.len().min(180)])
        .map_err(|_| format!("topic name `{name}` must be 1-249 characters of [A-Za-z0-9._-]"))
}

/// A connected part of the topology between topics: its tasks (one per input partition) run independently.
#[derive(Clone, Debug)]
pub(crate) struct SubTopology {
    pub sources: Vec<(TopicRef, NodeId)>,
    /// Indexes into [`Topology::nodes`] of the aggregates (each has its own store).
    pub aggregates: Vec<NodeId>,
    /// Internal topics this sub-topology writes (their partition count follows this one's).
    pub writes_repartition: Vec<String>,
}

/// A validated graph of operators, split into sub-topologies.
#[derive(Clone)]
pub struct Topology {
    pub(crate) nodes: Vec<Node>,
    pub(crate) subs: Vec<SubTopology>,
}

impl Topology {
    fn new(nodes: Vec<Node>) -> Result<Topology> {
        // Union-find over the edges: sources, operators and sinks connected without a topic in between.
        let n = nodes.len();
        let mut parent: Vec<usize> = (0..n).collect();
        fn find(p: &mut [usize], mut x: usize) -> usize {
            while p[x] != x {
                p[x] = p[p[x]];
                x = p[x];
            }
            x
        }
        for (i, node) in nodes.iter().enumerate() {
            // A join reads its table's store: both must run in the same task.
            let linked: Vec<NodeId> = match &node.kind {
                NodeKind::Join { table, .. } => vec![*table],
                NodeKind::StreamJoin { own, other, .. } => vec![*own, *other],
                _ => Vec::new(),
            };
            for &c in node.children.iter().chain(linked.iter()) {
                let (a, b) = (find(&mut parent, i), find(&mut parent, c));
                parent[a] = b;
            }
        }
        let mut roots: Vec<usize> = Vec::new();
        let mut subs: Vec<SubTopology> = Vec::new();
        let mut stores = std::collections::HashSet::new();
        let mut topics = std::collections::HashSet::new();
        for (i, node) in nodes.iter().enumerate() {
            let r = find(&mut parent, i);
            let idx = match roots.iter().position(|x| *x == r) {
                Some(p) => p,
                None => {
                    roots.push(r);
                    subs.push(SubTopology {
                        sources: Vec::new(),
                        aggregates: Vec::new(),
                        writes_repartition: Vec::new(),
                    });
                    subs.len() - 1
                }
            };
            match &node.kind {
                NodeKind::Source { topic, .. } => {
                    if !topics.insert(topic.clone()) {
                        return Err(Error::Topology(format!(
                            "topic {topic:?} is read by two sources; read it once and reuse the stream"
                        )));
                    }
                    subs[idx].sources.push((topic.clone(), i));
                }
                NodeKind::Aggregate(a) => {
                    if !stores.insert(a.store.clone()) {
                        return Err(Error::Topology(format!(
                            "two aggregations use the store name `{}`; names must be unique",
                            a.store
                        )));
                    }
                    subs[idx].aggregates.push(i);
                }
                NodeKind::Sink {
                    topic: TopicRef::Repartition(name),
                } => subs[idx].writes_repartition.push(name.clone()),
                _ => {}
            }
        }
        subs.retain(|s| !s.sources.is_empty());
        if subs.is_empty() {
            return Err(Error::Topology(
                "the topology reads no topic: start it with StreamsBuilder::stream".into(),
            ));
        }
        Ok(Topology { nodes, subs })
    }

    /// The store names, for tools and tests.
    pub fn store_names(&self) -> Vec<String> {
        self.nodes
            .iter()
            .filter_map(|n| match &n.kind {
                NodeKind::Aggregate(a) => Some(a.store.clone()),
                _ => None,
            })
            .collect()
    }

    /// A readable description of the sub-topologies (sources, stores, internal topics).
    pub fn describe(&self) -> String {
        let mut out = String::new();
        for (i, s) in self.subs.iter().enumerate() {
            out.push_str(&format!(
                "sub-topology {i}: sources {:?}",
                s.sources.iter().map(|(t, _)| t).collect::<Vec<_>>()
            ));
            for &a in &s.aggregates {
                if let NodeKind::Aggregate(a) = &self.nodes[a].kind {
                    out.push_str(&format!(
                        ", store {} (windows {:?}, final only {})",
                        a.store, a.windows, a.emit_final
                    ));
                }
            }
            for r in &s.writes_repartition {
                out.push_str(&format!(", writes repartition {r}"));
            }
            out.push('\n');
        }
        out
    }
}

// Session windows and time windows are both accepted by `windowed_by`.
#[allow(dead_code)]
fn _assert_into(t: TimeWindows, s: SessionWindows) -> (Windows, Windows) {
    (t.into(), s.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_by_splits_the_topology_at_the_repartition_topic() {
        let b = StreamsBuilder::new();
        b.stream("lines")
            .flat_map(|r| vec![r])
            .group_by("words", |r| r.value.clone().unwrap_or_default())
            .count("word-counts")
            .to("counts");
        let t = b.build().unwrap();
        assert_eq!(t.subs.len(), 2, "{}", t.describe());
        assert_eq!(t.subs[0].writes_repartition, vec!["words".to_string()]);
        assert_eq!(t.subs[1].aggregates.len(), 1);
        assert_eq!(t.store_names(), vec!["word-counts".to_string()]);
    }

    #[test]
    fn building_mistakes_are_reported_by_build() {
        let b = StreamsBuilder::new();
        b.stream("in")
            .group_by_key()
            .count("c")
            .suppress(Suppressed::UntilWindowCloses);
        let e = b.build().err().unwrap().to_string();
        assert!(e.contains("windowed aggregation only"), "{e}");

        let b = StreamsBuilder::new();
        b.stream("in").group_by_key().count("bad/name");
        assert!(b
            .build()
            .err()
            .unwrap()
            .to_string()
            .contains("[A-Za-z0-9._-]"));

        let b = StreamsBuilder::new();
        let s = b.stream("in").group_by_key();
        s.count("same");
        s.count("same");
        assert!(b.build().err().unwrap().to_string().contains("unique"));

        let b = StreamsBuilder::new();
        b.stream("in")
            .group_by_key()
            .windowed_by(TimeWindows::hopping(
                Duration::from_secs(1),
                Duration::from_secs(2),
            ))
            .count("w");
        assert!(b.build().err().unwrap().to_string().contains("advance"));

        assert!(StreamsBuilder::new().build().is_err());
    }
}
