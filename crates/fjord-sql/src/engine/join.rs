//! Joins in persistent queries (`CREATE STREAM ... AS SELECT ... FROM s [LEFT] JOIN t ON s.x = t.k`, and
//! `FROM a JOIN b WITHIN n unit ON a.x = b.y` between two streams) compiled onto `fjord-streams`, with ksqlDB's
//! semantics: a stream-table join looks each stream record up in the table materialized from the table's topic
//! (the latest row per key, a tombstone deletes it); INNER drops a record without a match, LEFT emits it with
//! NULL table columns; a stream-stream join pairs records of equal keys whose times differ by at most WITHIN.
//!
//! The topology: each side's topic, a `flat_map` that decodes the record into its row and re-keys it by the
//! join key (the bytes the table's topic has for that key), a repartition topic for a stream side whose join
//! expression is not its key (`<application id>-joinleft-repartition`, `...-joinright-repartition`), the
//! table's store `table` (or the join buffers `join-left` and `join-right`), the join, then a `flat_map` that
//! applies WHERE to the joined row, projects it and encodes the sink record. Rows travel between the steps as
//! JSON arrays of their values (ROWTIME, ROWPARTITION, ROWOFFSET, the columns).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use fjord_streams::{JoinWindows, KStream, Record, StreamsBuilder};
use serde_json::Value as J;

use crate::catalog::{Column, Format, QueryDef, SourceDef};
use crate::error::{Result, SqlError};
use crate::expr::Expr;
use crate::format;
use crate::parser::{JoinKind, SourceKind};
use crate::plan::{SelectPlan, Shape, PSEUDO};
use crate::types::{SqlType, Value};

use super::stateful::{rewrite, source_stream, supervise};
use super::{stops_at, QueryStats};

/// The table side's store (changelog `<application id>-table-changelog`).
const TABLE_STORE: &str = "table";
/// The stream-stream join's buffers `join-left` and `join-right`.
const JOIN_STORE: &str = "join";
const LEFT_REPARTITION: &str = "joinleft";
const RIGHT_REPARTITION: &str = "joinright";

/// The internal topics a join query of application `app` may create (deleted when it is terminated).
pub fn internal_topics(app: &str) -> Vec<String> {
    vec![
        format!("{app}-{TABLE_STORE}-changelog"),
        format!("{app}-{JOIN_STORE}-left-changelog"),
        format!("{app}-{JOIN_STORE}-right-changelog"),
        format!("{app}-{LEFT_REPARTITION}-repartition"),
        format!("{app}-{RIGHT_REPARTITION}-repartition"),
    ]
}

/// One side of a join: its source, the join expression over its own row, and whether its records are keyed
/// (and partitioned) by the join key's bytes already.
#[derive(Clone, Debug)]
struct Side {
    def: SourceDef,
    key: Expr,
    by_key: bool,
}

impl Side {
    fn types(&self) -> Vec<SqlType> {
        PSEUDO
            .iter()
            .map(|(_, t)| t.clone())
            .chain(self.def.columns.iter().map(|c| c.ty.clone()))
            .collect()
    }

    fn width(&self) -> usize {
        PSEUDO.len() + self.def.columns.len()
    }
}

/// A join query, checked and ready to run.
#[derive(Clone, Debug)]
pub struct JoinPlan {
    left: Side,
    right: Side,
    /// LEFT or FULL OUTER: a left record without a match is emitted with NULL right columns.
    left_join: bool,
    /// RIGHT or FULL OUTER (two streams only): a right record without a match is emitted with NULL left
    /// columns.
    right_outer: bool,
    /// The right side's join expression over the joined row: the key of a row without its left side.
    right_key: Expr,
    /// A stream-stream join: (WITHIN, GRACE PERIOD) in milliseconds.
    window: Option<(u64, u64)>,
    /// How the join key is written as record key bytes on both sides.
    key_format: Format,
    filter: Option<Expr>,
    /// Output columns with their expressions over the joined row (the left row, then the right row).
    outputs: Vec<(Column, Expr)>,
}

/// Where an expression's columns are: all in the left row, all in the right row, in both, or none.
fn sides(e: &Expr, nl: usize) -> (bool, bool) {
    let (mut l, mut r) = (false, false);
    let _ = rewrite(e, &mut |x| {
        if let Expr::Col(i) = x {
            if *i < nl {
                l = true;
            } else {
                r = true;
            }
        }
        Ok(None)
    });
    (l, r)
}

fn shift(e: &Expr, by: usize) -> Expr {
    rewrite(e, &mut |x| match x {
        Expr::Col(i) => Ok(Some(Expr::Col(i - by))),
        _ => Ok(None),
    })
    .expect("shifting columns cannot fail")
}

fn key_index(def: &SourceDef) -> Option<usize> {
    def.columns
        .iter()
        .position(|c| c.key)
        .map(|i| i + PSEUDO.len())
}

impl JoinPlan {
    /// Checks what the planner left to execution (ksqlDB's rules) and prepares the join.
    pub fn new(plan: &SelectPlan) -> Result<JoinPlan> {
        let Shape::Join {
            kinds,
            within,
            grace,
            equi,
            ..
        } = &plan.shape
        else {
            return Err(SqlError::semantic("not a join"));
        };
        if plan.joined.len() != 1 {
            return Err(SqlError::not_supported(
                "joining more than two sources in one query: join two, write the result with CREATE STREAM ... AS SELECT, and join that stream",
            ));
        }
        if !plan.partition_by.is_empty() {
            return Err(SqlError::not_supported(
                "PARTITION BY in a join: a join's result is keyed by the join key",
            ));
        }
        if plan.projection.iter().any(|p| p.expr.contains_agg()) {
            return Err(SqlError::not_supported(
                "aggregating a join in one query: write the join to a stream with CREATE STREAM ... AS SELECT, then aggregate that stream",
            ));
        }
        let (l, r) = (&plan.source, &plan.joined[0]);
        if let Some(s) = [l, r].into_iter().find(|s| s.key_columns().count() > 1) {
            return Err(SqlError::not_supported(format!(
                "joins of a source with several key columns ({}): a join is keyed by one join expression",
                s.name
            )));
        }
        let (left_join, right_outer) = match kinds[0] {
            JoinKind::Inner => (false, false),
            JoinKind::Left => (true, false),
            JoinKind::Right => (false, true),
            JoinKind::Full => (true, true),
        };
        match (l.kind, r.kind) {
            (SourceKind::Stream, _) => {}
            (SourceKind::Table, SourceKind::Stream) => {
                return Err(SqlError::semantic(format!(
                    "a stream-table join reads the stream on the left: write FROM {} JOIN {} ...",
                    r.name, l.name
                )))
            }
            (SourceKind::Table, SourceKind::Table) => {
                return Err(SqlError::not_supported(
                    "table-table joins: join a stream with a table, or two streams WITHIN a window",
                ))
            }
        }
        if l.topic == r.topic {
            return Err(SqlError::not_supported(format!(
                "joining {} with {}: both read the topic {} (a self-join); copy one side to a stream of its own with CREATE STREAM ... AS SELECT and join that",
                l.name, r.name, l.topic
            )));
        }
        let table = r.kind == SourceKind::Table;
        if table && right_outer {
            return Err(SqlError::not_supported(format!(
                "{} joins of a stream with a table (ksqlDB has INNER and LEFT only): use [INNER] JOIN or LEFT JOIN, or join two streams WITHIN a window",
                if left_join { "FULL OUTER" } else { "RIGHT" }
            )));
        }
        if table && within[0].is_some() {
            return Err(SqlError::semantic(format!(
                "a stream-table join takes no WITHIN: {} is a TABLE (WITHIN is for joining two streams)",
                r.name
            )));
        }
        for s in [l, r] {
            if s.key_format.uses_registry() {
                return Err(SqlError::not_supported(format!(
                    "joining {}, whose KEY_FORMAT reads its schema from the registry: use KEY_FORMAT='KAFKA' or 'JSON'",
                    s.name
                )));
            }
            if crate::plan::windowed_table(s) {
                return Err(SqlError::not_supported(format!(
                    "joining the windowed table {}",
                    s.name
                )));
            }
        }
        let nl = PSEUDO.len() + l.columns.len();
        let non_equi = || {
            SqlError::semantic(
                "a join needs ON with one equality between the two sources, e.g. ON s.userid = t.id (non-equi joins and joins on several conditions are not supported)",
            )
        };
        let [(a, at), (b, bt)] = equi[0].clone().ok_or_else(non_equi)?;
        let (lk, lt, rk, rt) = match (sides(&a, nl), sides(&b, nl)) {
            ((true, false), (false, true)) => (a, at, b, bt),
            ((false, true), (true, false)) => (b, bt, a, at),
            _ => return Err(non_equi()),
        };
        if lt != rt {
            return Err(SqlError::semantic(format!(
                "type mismatch: the join compares {lt} with {rt}: CAST one side so that both have one type (e.g. CAST(x AS {rt}))"
            )));
        }
        let rk_own = shift(&rk, nl);
        let l_by_key = key_index(l).is_some_and(|k| lk == Expr::Col(k));
        let r_by_key = key_index(r).is_some_and(|k| rk_own == Expr::Col(k));
        if table && !r_by_key {
            return Err(SqlError::semantic(format!(
                "a table can be joined on its PRIMARY KEY only: {} is not the key of {} (ksqlDB does not repartition tables)",
                hint(plan, &rk),
                r.name
            )));
        }
        // The key bytes both sides meet on: the table's topic's, else a side's own key format, else JSON.
        let key_format = if table || (r_by_key && !l_by_key) {
            r.key_format
        } else if l_by_key {
            l.key_format
        } else {
            Format::Json
        };
        if key_format == Format::None {
            return Err(SqlError::semantic(
                "the joined sources have no key (KEY_FORMAT='NONE'): declare the key column",
            ));
        }
        let window = match within[0] {
            None => None,
            Some((before, after)) => {
                if before != after {
                    return Err(SqlError::not_supported(
                        "WITHIN (before, after) with two different bounds: use one, e.g. WITHIN 1 HOUR",
                    ));
                }
                if i64::try_from(before.saturating_add(grace[0].unwrap_or(0))).is_err() {
                    return Err(SqlError::semantic("the WITHIN window is too large"));
                }
                // ksqlDB's default grace period of a join window without one: 24 hours.
                Some((before, grace[0].unwrap_or(24 * 3600 * 1000)))
            }
        };
        let mut key_col = None;
        let mut outputs = Vec::new();
        for (i, p) in plan.projection.iter().enumerate() {
            let is_key = key_col.is_none() && (p.expr == lk || p.expr == rk);
            if is_key {
                key_col = Some(i);
            }
            outputs.push((
                Column {
                    name: p.name.clone(),
                    ty: p.ty.clone(),
                    key: is_key,
                },
                p.expr.clone(),
            ));
        }
        if key_col.is_none() {
            return Err(SqlError::semantic(format!(
                "Key missing from projection: the result of a join is keyed by the join expression; select {} (or {}) so that it is the KEY column",
                hint(plan, &lk),
                hint(plan, &rk)
            )));
        }
        Ok(JoinPlan {
            left: Side {
                def: l.clone(),
                key: lk,
                by_key: l_by_key && l.key_format == key_format,
            },
            right: Side {
                def: r.clone(),
                key: rk_own,
                by_key: r_by_key && r.key_format == key_format,
            },
            left_join,
            right_outer,
            right_key: rk,
            window,
            key_format,
            filter: plan.filter.clone(),
            outputs,
        })
    }

    /// Whether `other`'s stores and offsets can be read by this plan (CREATE OR REPLACE keeps them): the same
    /// sources, join keys, join key bytes and window.
    pub fn same_state_layout(&self, other: &JoinPlan) -> bool {
        let side = |a: &Side, b: &Side| {
            a.def.name == b.def.name
                && a.def.topic == b.def.topic
                && a.key == b.key
                && a.by_key == b.by_key
        };
        side(&self.left, &other.left)
            && side(&self.right, &other.right)
            && self.window == other.window
            && self.key_format == other.key_format
    }

    /// The output stream's columns (the join key is its KEY column).
    pub fn columns(&self) -> Vec<Column> {
        self.outputs.iter().map(|(c, _)| c.clone()).collect()
    }

    /// Whether a side's topic is read through a repartition topic (for EXPLAIN).
    pub fn repartitions(&self) -> [bool; 2] {
        [!self.left.by_key, !self.right.by_key]
    }

    /// A decoded row of a side as it travels: (join key bytes, the row as a JSON array); `None` when the join
    /// key is NULL (such records never join: ksqlDB drops them).
    fn keyed_row(
        &self,
        side: &Side,
        row: &[Value],
    ) -> std::result::Result<Option<(Bytes, Bytes)>, String> {
        let k = side.key.eval(row)?;
        let Some(kb) = format::encode_key(self.key_format, &k) else {
            return Ok(None);
        };
        Ok(Some((Bytes::from(kb), row_bytes(row))))
    }

    /// The sink record of a joined row (the left row's values, then the right row's or NULLs): `Ok(None)` when
    /// WHERE drops it.
    #[allow(clippy::type_complexity)]
    fn output(
        &self,
        sink: &SourceDef,
        joined: &[u8],
    ) -> std::result::Result<Option<(Option<Vec<u8>>, Vec<u8>)>, String> {
        let mut types = self.left.types();
        types.extend(self.right.types());
        let row = read_row(joined, &types)?;
        if let Some(f) = &self.filter {
            if f.eval(&row)? != Value::Bool(true) {
                return Ok(None);
            }
        }
        // The key is the join key: the left side's value (a LEFT join's missing right side has it too), the
        // right side's for a row without its left side (RIGHT and FULL OUTER joins).
        let mut key = self.left.key.eval(&row)?;
        if key.is_null() && self.right_outer {
            key = self.right_key.eval(&row)?;
        }
        let mut named = Vec::new();
        let mut key_bytes = None;
        for (c, e) in &self.outputs {
            if c.key {
                key_bytes = format::encode_key(sink.key_format, &key);
            } else {
                named.push((c.name.as_str(), e.eval(&row)?));
            }
        }
        Ok(Some((
            key_bytes,
            format::encode_value(sink.value_format, &named),
        )))
    }
}

fn row_bytes(row: &[Value]) -> Bytes {
    Bytes::from(
        J::Array(row.iter().map(Value::to_json).collect())
            .to_string()
            .into_bytes(),
    )
}

fn read_row(b: &[u8], types: &[SqlType]) -> std::result::Result<Vec<Value>, String> {
    let j: J = serde_json::from_slice(b).map_err(|e| e.to_string())?;
    let vals = j.as_array().ok_or("a joined row is not an array")?;
    if vals.len() != types.len() {
        return Err(format!(
            "a joined row has {} values, expected {}",
            vals.len(),
            types.len()
        ));
    }
    vals.iter()
        .zip(types)
        .map(|(v, t)| Value::from_json(v, t))
        .collect()
}

/// Concatenates two rows as they travel (JSON arrays) without decoding them; `None`: that side's `width`
/// NULLs (an outer join's missing side).
fn splice(
    left: Option<&[u8]>,
    left_width: usize,
    right: Option<&[u8]>,
    right_width: usize,
) -> Bytes {
    let mut out = Vec::with_capacity(
        left.map_or(left_width * 5, <[u8]>::len) + right.map_or(right_width * 5, <[u8]>::len),
    );
    let side = |out: &mut Vec<u8>, row: Option<&[u8]>, width: usize| match row
        .and_then(|r| r.strip_prefix(b"[")?.strip_suffix(b"]"))
    {
        Some(values) => out.extend_from_slice(values),
        None => {
            for i in 0..width {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(b"null");
            }
        }
    };
    out.push(b'[');
    side(&mut out, left, left_width);
    out.push(b',');
    side(&mut out, right, right_width);
    out.push(b']');
    Bytes::from(out)
}

/// Concatenates two row arrays (`None`: the right side's NULLs).
fn concat(left: &[u8], right: Option<&[u8]>, right_width: usize) -> Bytes {
    let mut l: Vec<J> = serde_json::from_slice(left).unwrap_or_default();
    match right.and_then(|r| serde_json::from_slice::<Vec<J>>(r).ok()) {
        Some(r) => l.extend(r),
        None => l.extend(std::iter::repeat_n(J::Null, right_width)),
    }
    Bytes::from(J::Array(l).to_string().into_bytes())
}

/// How a join expression is named in an error: its column's name when it is one.
fn hint(plan: &SelectPlan, e: &Expr) -> String {
    if let Expr::Col(i) = e {
        let nl = PSEUDO.len() + plan.source.columns.len();
        let (def, j) = if *i < nl {
            (&plan.source, *i)
        } else {
            (&plan.joined[0], i - nl)
        };
        if let Some(c) = j.checked_sub(PSEUDO.len()).and_then(|j| def.columns.get(j)) {
            return format!("{}.{}", def.name, c.name);
        }
        if let Some((n, _)) = PSEUDO.get(j) {
            return format!("{}.{n}", def.name);
        }
    }
    "the join expression".to_string()
}

/// Decodes and re-keys one side's records; records that do not decode are counted and skipped.
fn side_rows(
    b: &StreamsBuilder,
    plan: &Arc<JoinPlan>,
    right: bool,
    fail_on_bad_record: bool,
    stats: &Arc<QueryStats>,
    stop: &Arc<AtomicBool>,
) -> KStream {
    let side = if right { &plan.right } else { &plan.left };
    let src = side.def.clone();
    let (source, wait_for_registry) = source_stream(b, &src, stop);
    let (p, st) = (plan.clone(), stats.clone());
    let is_table = src.kind == SourceKind::Table;
    let rows = source.try_flat_map(move |r: Record| {
        st.records_in.fetch_add(1, Ordering::Relaxed);
        if is_table && r.value.is_none() {
            // A tombstone deletes the key from the table.
            return Ok(Some(r));
        }
        wait_for_registry(&r);
        let side = if right { &p.right } else { &p.left };
        let decoded = format::decode(
            &side.def,
            r.key.as_deref(),
            r.value.as_deref(),
            (r.timestamp, -1, -1),
        );
        if let (Err(e), true) = (&decoded, fail_on_bad_record) {
            // The instance stops at the record without committing it (exactly once, nor anything since its last
            // commit; at least once, the records before it are committed, see the streams library's
            // `Engine::abandon`), and so does every restarted instance: the query stays in ERROR.
            st.errors.fetch_add(1, Ordering::Relaxed);
            return Err(stops_at(e));
        }
        let out = decoded.and_then(|row| match row {
            Some(row) => p.keyed_row(side, &row),
            None => Ok(None),
        });
        Ok(match out {
            Ok(Some((k, v))) => Some(Record {
                // The table keeps its topic's key bytes (they are the join key's).
                key: if is_table { r.key } else { Some(k) },
                value: Some(v),
                timestamp: r.timestamp,
            }),
            Ok(None) => None,
            Err(e) => {
                st.errors.fetch_add(1, Ordering::Relaxed);
                *st.last_error.lock().expect("stats") = Some(e);
                None
            }
        })
    });
    if side.by_key {
        rows
    } else {
        rows.repartition(
            if right {
                RIGHT_REPARTITION
            } else {
                LEFT_REPARTITION
            },
            |r| r.key.clone().unwrap_or_default(),
        )
    }
}

fn builder(
    plan: &Arc<JoinPlan>,
    sink: &SourceDef,
    fail_on_bad_record: bool,
    stats: &Arc<QueryStats>,
    stop: &Arc<AtomicBool>,
) -> StreamsBuilder {
    let b = StreamsBuilder::new();
    let left = side_rows(&b, plan, false, fail_on_bad_record, stats, stop);
    let right = side_rows(&b, plan, true, fail_on_bad_record, stats, stop);
    let width = plan.right.width();
    let joined = match plan.window {
        None => {
            let table = right.to_table(TABLE_STORE);
            let j = move |r: &Record, t: Option<&[u8]>| concat(r.value_bytes(), t, width);
            if plan.left_join {
                left.left_join(&table, j)
            } else {
                left.join(&table, move |r, t| j(r, Some(t)))
            }
        }
        Some((diff, grace)) => {
            let windows =
                JoinWindows::of(Duration::from_millis(diff)).grace(Duration::from_millis(grace));
            if plan.left_join || plan.right_outer {
                // An unmatched record is emitted (with the other side's NULLs) once its window and grace
                // have passed, as ksqlDB does since 0.25.
                let left_width = plan.left.width();
                left.outer_join_windowed(
                    &right,
                    JOIN_STORE,
                    windows,
                    [plan.left_join, plan.right_outer],
                    move |l, r| {
                        splice(
                            l.map(Record::value_bytes),
                            left_width,
                            r.map(Record::value_bytes),
                            width,
                        )
                    },
                )
            } else {
                left.join_windowed(&right, JOIN_STORE, windows, move |l, r| {
                    splice(Some(l.value_bytes()), 0, Some(r.value_bytes()), width)
                })
            }
        }
    };
    let (p, s2, st) = (plan.clone(), sink.clone(), stats.clone());
    joined
        .flat_map(move |r: Record| match p.output(&s2, r.value_bytes()) {
            Ok(Some((k, v))) => {
                st.records_out.fetch_add(1, Ordering::Relaxed);
                Some(Record {
                    key: k.map(Bytes::from),
                    value: Some(Bytes::from(v)),
                    timestamp: r.timestamp,
                })
            }
            Ok(None) => None,
            Err(e) => {
                st.errors.fetch_add(1, Ordering::Relaxed);
                *st.last_error.lock().expect("stats") = Some(e);
                None
            }
        })
        .to(&sink.topic);
    b
}

/// Starts the join query writing `sink` on a supervisor thread (restarted from its committed offsets and
/// changelogs when it fails, closed when `stop` is set).
pub fn start(
    q: &QueryDef,
    bootstrap: &str,
    plan: JoinPlan,
    sink: &SourceDef,
    stop: Arc<AtomicBool>,
    stats: Arc<QueryStats>,
) -> Result<std::thread::JoinHandle<()>> {
    if sink.value_format.uses_registry() || sink.key_format.uses_registry() {
        return Err(SqlError::not_supported(
            "a join's output stream in a registry format: give it VALUE_FORMAT='JSON' or 'DELIMITED' and KEY_FORMAT='KAFKA' or 'JSON'",
        ));
    }
    let plan = Arc::new(plan);
    let topology = builder(&plan, sink, q.fail_on_bad_record, &stats, &stop)
        .build()
        .map_err(|e| SqlError::execution(format!("the query's topology is invalid: {e}")))?;
    supervise(
        &q.id,
        bootstrap,
        q.exactly_once(),
        topology,
        Arc::new(Mutex::new(None)),
        stop,
        stats,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Catalog;
    use crate::parser::{parse_statement, Statement};
    use crate::plan::plan_select;

    fn col(n: &str, ty: SqlType, key: bool) -> Column {
        Column {
            name: n.into(),
            ty,
            key,
        }
    }

    fn source(name: &str, kind: SourceKind, columns: Vec<Column>) -> SourceDef {
        SourceDef {
            name: name.into(),
            kind,
            columns,
            topic: name.to_lowercase(),
            key_format: Format::Kafka,
            value_format: Format::Json,
            timestamp: None,
            statement: String::new(),
            query: None,
        }
    }

    fn catalog() -> Catalog {
        let mut c = Catalog::default();
        c.put(source(
            "ORDERS",
            SourceKind::Stream,
            vec![
                col("ID", SqlType::String, true),
                col("CUSTOMER", SqlType::String, false),
                col("QTY", SqlType::Int, false),
            ],
        ));
        c.put(source(
            "CUSTOMERS",
            SourceKind::Table,
            vec![
                col("CID", SqlType::String, true),
                col("NAME", SqlType::String, false),
                col("AGE", SqlType::Int, false),
            ],
        ));
        c.put(source(
            "ACCOUNTS",
            SourceKind::Table,
            vec![
                col("AID", SqlType::Bigint, true),
                col("BALANCE", SqlType::Double, false),
            ],
        ));
        c.put(source(
            "SHIPMENTS",
            SourceKind::Stream,
            vec![
                col("ORDER_ID", SqlType::String, true),
                col("WAREHOUSE", SqlType::String, false),
            ],
        ));
        c
    }

    fn plan(sql: &str) -> Result<JoinPlan> {
        let Statement::CreateSource {
            as_select: Some(sel),
            ..
        } = parse_statement(sql)?.statement
        else {
            panic!("not a CSAS: {sql}")
        };
        JoinPlan::new(&plan_select(&sel, &catalog())?)
    }

    fn err(sql: &str) -> String {
        plan(sql).unwrap_err().to_string()
    }

    fn s(v: &str) -> Value {
        Value::String(v.into())
    }

    #[test]
    fn a_stream_table_join_rekeys_the_stream_and_projects_the_joined_row() {
        let p = plan(
            "CREATE STREAM e AS SELECT o.customer AS cust, o.id, c.name, o.qty * 2 AS twice FROM orders o \
             LEFT JOIN customers c ON o.customer = c.cid WHERE o.qty > 1 EMIT CHANGES",
        )
        .unwrap();
        assert!(p.left_join);
        assert_eq!(
            p.repartitions(),
            [true, false],
            "the join column is not the stream's key"
        );
        let cols = p.columns();
        assert_eq!(
            cols.iter()
                .map(|c| (c.name.as_str(), c.key))
                .collect::<Vec<_>>(),
            [
                ("CUST", true),
                ("ID", false),
                ("NAME", false),
                ("TWICE", false)
            ]
        );
        let order = [
            Value::Bigint(5),
            Value::Int(0),
            Value::Bigint(0),
            s("o1"),
            s("c1"),
            Value::Int(3),
        ];
        let (k, v) = p.keyed_row(&p.left, &order).unwrap().unwrap();
        assert_eq!(
            &k[..],
            b"c1",
            "re-keyed by the join column in the table's key format"
        );
        let customer = [
            Value::Bigint(1),
            Value::Int(0),
            Value::Bigint(0),
            s("c1"),
            s("Ann"),
            Value::Int(40),
        ];
        let (_, t) = p.keyed_row(&p.right, &customer).unwrap().unwrap();
        let sink = source("E", SourceKind::Stream, cols);
        let out = |t: Option<&[u8]>| {
            p.output(&sink, &concat(&v, t, p.right.width()))
                .unwrap()
                .map(|(k, v)| (k, serde_json::from_slice::<J>(&v).unwrap()))
        };
        assert_eq!(
            out(Some(&t)),
            Some((
                Some(b"c1".to_vec()),
                serde_json::json!({"ID": "o1", "NAME": "Ann", "TWICE": 6})
            ))
        );
        // LEFT: a miss has NULL table columns; the key is still the join key.
        assert_eq!(
            out(None),
            Some((
                Some(b"c1".to_vec()),
                serde_json::json!({"ID": "o1", "NAME": null, "TWICE": 6})
            ))
        );
        // WHERE on the joined row.
        let small = [
            Value::Bigint(5),
            Value::Int(0),
            Value::Bigint(0),
            s("o2"),
            s("c1"),
            Value::Int(1),
        ];
        let (_, v2) = p.keyed_row(&p.left, &small).unwrap().unwrap();
        assert_eq!(
            p.output(&sink, &concat(&v2, Some(&t), p.right.width()))
                .unwrap(),
            None
        );
        // A NULL join key never joins.
        let mut nokey = order.clone();
        nokey[4] = Value::Null;
        assert!(p.keyed_row(&p.left, &nokey).unwrap().is_none());
    }

    #[test]
    fn an_upgrade_keeps_a_joins_state_only_with_the_same_sources_and_keys() {
        let a = plan("CREATE STREAM e AS SELECT o.customer, c.name FROM orders o JOIN customers c ON o.customer = c.cid EMIT CHANGES").unwrap();
        let b = plan("CREATE STREAM e AS SELECT o.customer, c.age, o.qty FROM orders o LEFT JOIN customers c ON o.customer = c.cid WHERE o.qty > 2 EMIT CHANGES").unwrap();
        let c = plan("CREATE STREAM e AS SELECT a.aid, a.balance FROM orders o JOIN accounts a ON CAST(o.qty AS BIGINT) = a.aid EMIT CHANGES").unwrap();
        let d = plan("CREATE STREAM e AS SELECT o.id, s.warehouse FROM orders o JOIN shipments s WITHIN 1 MINUTE ON o.id = s.order_id EMIT CHANGES").unwrap();
        let d2 = plan("CREATE STREAM e AS SELECT o.id, s.warehouse FROM orders o JOIN shipments s WITHIN 2 MINUTES ON o.id = s.order_id EMIT CHANGES").unwrap();
        assert!(a.same_state_layout(&b));
        assert!(!a.same_state_layout(&c));
        assert!(!d.same_state_layout(&d2));
        assert!(d.same_state_layout(&d));
    }

    #[test]
    fn a_join_on_the_streams_key_needs_no_repartition() {
        let p = plan(
            "CREATE STREAM e AS SELECT s.order_id, s.warehouse, c.name FROM shipments s JOIN customers c \
             ON s.order_id = c.cid EMIT CHANGES",
        )
        .unwrap();
        assert_eq!(p.repartitions(), [false, false]);
        assert!(!p.left_join);
        let p = plan(
            "CREATE STREAM e AS SELECT o.id, s.warehouse FROM orders o JOIN shipments s WITHIN 1 MINUTE \
             GRACE PERIOD 10 SECONDS ON o.id = s.order_id EMIT CHANGES",
        )
        .unwrap();
        assert_eq!(p.window, Some((60_000, 10_000)));
        assert_eq!(p.repartitions(), [false, false]);
        let p = plan(
            "CREATE STREAM e AS SELECT o.id, s.warehouse FROM orders o JOIN shipments s WITHIN 1 MINUTE \
             ON o.customer = s.warehouse EMIT CHANGES",
        )
        .unwrap();
        assert_eq!(p.repartitions(), [true, true]);
        assert_eq!(p.key_format, Format::Json);
    }

    #[test]
    fn outer_joins_of_two_streams_plan_and_key_rows_without_their_left_side() {
        for (kind, left, right) in [
            ("LEFT", true, false),
            ("RIGHT", false, true),
            ("FULL OUTER", true, true),
            ("FULL", true, true),
        ] {
            let p = plan(&format!(
                "CREATE STREAM e AS SELECT o.id, o.qty, s.warehouse FROM orders o {kind} JOIN shipments s \
                 WITHIN 1 MINUTE ON o.id = s.order_id EMIT CHANGES"
            ))
            .unwrap();
            assert_eq!((p.left_join, p.right_outer), (left, right), "{kind}");
        }
        let p = plan(
            "CREATE STREAM e AS SELECT o.id, o.qty, s.warehouse FROM orders o FULL OUTER JOIN shipments s \
             WITHIN 1 MINUTE ON o.id = s.order_id EMIT CHANGES",
        )
        .unwrap();
        let ship = [
            Value::Bigint(5),
            Value::Int(0),
            Value::Bigint(0),
            s("o7"),
            s("w1"),
        ];
        let (_, r) = p.keyed_row(&p.right, &ship).unwrap().unwrap();
        // A right row without its left side: the left side's NULLs, and the key from the right side.
        let joined = splice(None, p.left.width(), Some(&r), p.right.width());
        let sink = source("E", SourceKind::Stream, p.columns());
        let (k, v) = p.output(&sink, &joined).unwrap().unwrap();
        assert_eq!(k, Some(b"o7".to_vec()));
        assert_eq!(
            serde_json::from_slice::<J>(&v).unwrap(),
            serde_json::json!({"QTY": null, "WAREHOUSE": "w1"})
        );
        // Splicing equals concatenating the decoded rows.
        let order = [
            Value::Bigint(1),
            Value::Int(0),
            Value::Bigint(3),
            s("o7"),
            s("c\"1,]"),
            Value::Int(2),
        ];
        let (_, l) = p.keyed_row(&p.left, &order).unwrap().unwrap();
        assert_eq!(
            splice(Some(&l), p.left.width(), Some(&r), p.right.width()),
            concat(&l, Some(&r), p.right.width())
        );
        assert_eq!(
            splice(Some(&l), p.left.width(), None, p.right.width()),
            concat(&l, None, p.right.width())
        );
    }

    #[test]
    fn joins_ksqldb_refuses_get_clear_errors() {
        let e = err("CREATE STREAM e AS SELECT o.id, c.name FROM orders o JOIN customers c ON o.customer > c.cid EMIT CHANGES");
        assert!(e.contains("one equality between the two sources"), "{e}");
        let e = err("CREATE STREAM e AS SELECT o.id, c.name FROM orders o JOIN customers c ON o.customer = c.cid AND o.qty = c.age EMIT CHANGES");
        assert!(e.contains("one equality"), "{e}");
        let e = err("CREATE STREAM e AS SELECT o.id, c.name FROM orders o JOIN customers c ON o.id = o.customer EMIT CHANGES");
        assert!(e.contains("one equality between the two sources"), "{e}");
        let e = err("CREATE STREAM e AS SELECT o.id, c.name FROM orders o JOIN customers c ON o.nope = c.cid EMIT CHANGES");
        assert!(e.contains("NOPE"), "{e}");
        let e = err("CREATE STREAM e AS SELECT o.id, c.name FROM orders o JOIN customers c ON o.customer = c.name EMIT CHANGES");
        assert!(
            e.contains("PRIMARY KEY only") && e.contains("CUSTOMERS.NAME"),
            "{e}"
        );
        let e = err("CREATE STREAM e AS SELECT o.id, c.name FROM orders o JOIN customers c ON o.qty = c.cid EMIT CHANGES");
        assert!(
            e.contains("type mismatch") && e.contains("column 74"),
            "{e}"
        );
        // Equal by value but not by key bytes (INT and BIGINT keys differ): CAST one side.
        let e = err("CREATE STREAM e AS SELECT o.qty, a.balance FROM orders o JOIN accounts a ON o.qty = a.aid EMIT CHANGES");
        assert!(
            e.contains("compares INTEGER with BIGINT") && e.contains("CAST"),
            "{e}"
        );
        let p = plan("CREATE STREAM e AS SELECT a.aid, a.balance FROM orders o JOIN accounts a ON CAST(o.qty AS BIGINT) = a.aid EMIT CHANGES")
            .unwrap();
        assert_eq!(p.repartitions(), [true, false]);
        let e = err("CREATE STREAM e AS SELECT o.qty, c.name FROM orders o JOIN customers c ON o.customer = c.cid EMIT CHANGES");
        assert!(
            e.contains("Key missing from projection") && e.contains("ORDERS.CUSTOMER"),
            "{e}"
        );
        let e = err("CREATE STREAM e AS SELECT c.cid, o.id FROM customers c JOIN orders o ON o.customer = c.cid EMIT CHANGES");
        assert!(e.contains("reads the stream on the left"), "{e}");
        let e = err("CREATE STREAM e AS SELECT o.id, c.name FROM orders o RIGHT JOIN customers c ON o.customer = c.cid EMIT CHANGES");
        assert!(e.contains("RIGHT joins"), "{e}");
        let e = err("CREATE STREAM e AS SELECT o.id, c.name FROM orders o FULL OUTER JOIN customers c ON o.customer = c.cid EMIT CHANGES");
        assert!(
            e.contains("FULL OUTER joins of a stream with a table"),
            "{e}"
        );
        let e = err("CREATE STREAM e AS SELECT o.id, s.warehouse FROM orders o JOIN shipments s WITHIN (1 SECOND, 2 SECONDS) ON o.id = s.order_id EMIT CHANGES");
        assert!(e.contains("two different bounds"), "{e}");
        let e = err("CREATE STREAM e AS SELECT a.id, b.qty FROM orders a JOIN orders b WITHIN 1 SECOND ON a.id = b.id EMIT CHANGES");
        assert!(e.contains("self-join"), "{e}");
        let e = err("CREATE STREAM e AS SELECT o.customer, c.name FROM orders o JOIN customers c WITHIN 1 SECOND ON o.customer = c.cid EMIT CHANGES");
        assert!(e.contains("takes no WITHIN"), "{e}");
    }
}
