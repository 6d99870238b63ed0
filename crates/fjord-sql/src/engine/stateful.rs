//! Stateful persistent queries (`CREATE TABLE ... AS SELECT ... GROUP BY`, windowed or not) compiled onto
//! `fjord-streams`, and pull queries answered from their stores.
//!
//! The topology: the source topic, a `flat_map` that decodes each record, applies WHERE, and turns it into an
//! *input* (`{"k": group key, "v": [[argument values of each aggregate call]]}`, keyed by the group key's JSON
//! text), `group_by` through a repartition topic (or `group_by_key` when grouping by the source's key column,
//! whose records are already partitioned by it), `aggregate` (optionally `windowed_by` tumbling, hopping or
//! session windows, `suppress` for EMIT FINAL) into the store `agg` with the *state* `{"k": key, "a":
//! [accumulators], "p": HAVING holds now, "q": it held before this update}`, then a `flat_map` that finishes each
//! update into the output row (or a tombstone when HAVING stops holding, as ksqlDB does since 0.13) and the
//! sink. The store and its changelog (`<application id>-agg-changelog`) are the library's, so a restarted query
//! restores its state and goes on from its committed offsets.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use fjord_streams::{
    KStream, KafkaStreams, Record, SessionWindows, StreamsBuilder, StreamsConfig, StreamsState,
    Suppressed, TimeWindows, Window, WindowedKey,
};
use serde_json::{json, Value as J};

use crate::catalog::{Column, QueryDef, SourceDef};
use crate::error::{Result, SqlError};
use crate::expr::{AggFunc, BinOp, Expr};
use crate::format;
use crate::parser::{Emit, WindowSpec};
use crate::plan::{SelectPlan, Shape, PSEUDO};
use crate::types::{SqlType, Value};

use super::{stops_at, stops_at_row, QueryStats, Row, HEALTHY_AFTER};

/// The store of a query's aggregate (its changelog is `<application id>-agg-changelog`).
pub const STORE: &str = "agg";

/// ksqlDB's default grace period when a window gives none.
const DEFAULT_GRACE_MS: u64 = 24 * 3600 * 1000;

/// One aggregate call: the function, its argument expressions (over the source row) and, when it is a
/// selected column of its own, the result type the planner gave it (otherwise the result's type follows the
/// values: BIGINT or DOUBLE for numbers).
#[derive(Clone, Debug)]
struct AggCall {
    func: AggFunc,
    args: Vec<Expr>,
    out_ty: Option<SqlType>,
}

/// An aggregation query, checked and ready to run.
#[derive(Clone, Debug)]
pub struct AggPlan {
    pub source: SourceDef,
    filter: Option<Expr>,
    /// The GROUP BY expressions; with one, the store key and the state's `k` are its value's JSON, with several
    /// a JSON array of their values (so a single-key query's state reads as it always did).
    group_by: Vec<Expr>,
    /// The types of the GROUP BY expressions, in their order.
    key_tys: Vec<SqlType>,
    /// Grouping by the source's key column(s): no repartition needed.
    by_source_key: bool,
    pub window: Option<WindowSpec>,
    aggs: Vec<AggCall>,
    /// Output columns with their expressions over the finished row.
    outputs: Vec<(Column, Expr)>,
    having: Option<Expr>,
    pub emit_final: bool,
}

/// Replaces sub-expressions: `f` gives the replacement of a node, or `None` to descend into its children.
pub(super) fn rewrite(e: &Expr, f: &mut dyn FnMut(&Expr) -> Result<Option<Expr>>) -> Result<Expr> {
    if let Some(r) = f(e)? {
        return Ok(r);
    }
    let mut b = |x: &Expr| -> Result<Box<Expr>> { Ok(Box::new(rewrite(x, f)?)) };
    Ok(match e {
        Expr::Lit(_) | Expr::Col(_) => e.clone(),
        Expr::Neg(x) => Expr::Neg(b(x)?),
        Expr::Not(x) => Expr::Not(b(x)?),
        Expr::Bin(op, x, y) => Expr::Bin(*op, b(x)?, b(y)?),
        Expr::IsNull(x, n) => Expr::IsNull(b(x)?, *n),
        Expr::Case {
            operand,
            whens,
            otherwise,
        } => {
            let operand = match operand {
                Some(o) => Some(b(o)?),
                None => None,
            };
            let mut ws = Vec::new();
            for (w, t) in whens {
                ws.push((rewrite(w, f)?, rewrite(t, f)?));
            }
            let otherwise = match otherwise {
                Some(o) => Some(Box::new(rewrite(o, f)?)),
                None => None,
            };
            Expr::Case {
                operand,
                whens: ws,
                otherwise,
            }
        }
        Expr::Cast(x, t) => Expr::Cast(b(x)?, t.clone()),
        Expr::Call(func, args) => Expr::Call(
            *func,
            args.iter()
                .map(|a| rewrite(a, f))
                .collect::<Result<Vec<_>>>()?,
        ),
        Expr::InList(x, l, n) => Expr::InList(
            b(x)?,
            l.iter()
                .map(|a| rewrite(a, f))
                .collect::<Result<Vec<_>>>()?,
            *n,
        ),
        Expr::Between(x, lo, hi, n) => Expr::Between(b(x)?, b(lo)?, b(hi)?, *n),
        Expr::Like(x, p, n) => Expr::Like(b(x)?, b(p)?, *n),
        Expr::Field(x, name) => Expr::Field(b(x)?, name.clone()),
        Expr::Index(x, i) => Expr::Index(b(x)?, b(i)?),
        Expr::Agg(func, args) => Expr::Agg(*func, args.clone()),
    })
}

impl AggPlan {
    /// Checks what the planner left to execution and prepares the query. `proj_types` come from the plan.
    pub fn new(plan: &SelectPlan) -> Result<AggPlan> {
        let Shape::Aggregate {
            window,
            group_by,
            having,
        } = &plan.shape
        else {
            return Err(SqlError::semantic(
                "an aggregation needs GROUP BY and an aggregate function",
            ));
        };
        let gb = group_by.clone();
        for (i, g) in gb.iter().enumerate() {
            if gb[..i].contains(g) {
                return Err(SqlError::semantic(
                    "an expression appears twice in GROUP BY: name each once",
                ));
            }
        }
        let nk = gb.len();
        let (row_wstart, row_wend, row_aggs) = (nk, nk + 1, nk + 2);
        let ncols = PSEUDO.len() + plan.source.columns.len();
        let (ws_idx, we_idx) = (ncols, ncols + 1);
        let mut aggs: Vec<AggCall> = Vec::new();
        let mut key_tys: Vec<Option<SqlType>> = vec![None; nk];
        let mut out_cols = Vec::new();
        let mut finish = |e: &Expr, name: &str| -> Result<Expr> {
            rewrite(e, &mut |x| {
                if let Some(j) = gb.iter().position(|g| g == x) {
                    return Ok(Some(Expr::Col(j)));
                }
                match x {
                    Expr::Col(i) if window.is_some() && *i == ws_idx => {
                        Ok(Some(Expr::Col(row_wstart)))
                    }
                    Expr::Col(i) if window.is_some() && *i == we_idx => {
                        Ok(Some(Expr::Col(row_wend)))
                    }
                    Expr::Col(_) => Err(SqlError::semantic(format!(
                        "{name} uses a column that is neither in GROUP BY nor inside an aggregate function: group by it or aggregate it (e.g. LATEST_BY_OFFSET)"
                    ))),
                    Expr::Agg(f, args) => {
                        let j = match aggs.iter().position(|a| a.func == *f && a.args == *args) {
                            Some(j) => j,
                            None => {
                                aggs.push(AggCall {
                                    func: *f,
                                    args: args.clone(),
                                    out_ty: None,
                                });
                                aggs.len() - 1
                            }
                        };
                        Ok(Some(Expr::Col(row_aggs + j)))
                    }
                    _ => Ok(None),
                }
            })
        };
        for p in &plan.projection {
            let e = finish(&p.expr, &p.name)?;
            let key_slot = match e {
                Expr::Col(j) if j < nk => Some(j),
                _ => None,
            };
            let is_key = key_slot.is_some();
            if let Some(j) = key_slot {
                if key_tys[j].is_some() {
                    return Err(SqlError::semantic(format!(
                        "a GROUP BY expression is selected twice (as {} too): select it once, it is a PRIMARY KEY column of the table",
                        p.name
                    )));
                }
                key_tys[j] = Some(p.ty.clone());
            }
            out_cols.push((
                Column {
                    name: p.name.clone(),
                    ty: p.ty.clone(),
                    key: is_key,
                },
                e,
            ));
        }
        let Some(key_tys) = key_tys.into_iter().collect::<Option<Vec<SqlType>>>() else {
            return Err(SqlError::semantic(if nk == 1 {
                "the GROUP BY expression must be in the SELECT list: it is the table's PRIMARY KEY (e.g. SELECT k, COUNT(*) ... GROUP BY k)"
            } else {
                "every GROUP BY expression must be in the SELECT list: together they are the table's PRIMARY KEY (e.g. SELECT a, b, COUNT(*) ... GROUP BY a, b)"
            }));
        };
        let having = match having {
            Some(h) => Some(finish(h, "HAVING")?),
            None => None,
        };
        // The result types of the aggregate calls, from the planner's types of the projections that are one.
        for (p, (_, e)) in plan.projection.iter().zip(&out_cols) {
            if let Expr::Col(i) = e {
                if *i >= row_aggs {
                    aggs[i - row_aggs].out_ty = Some(p.ty.clone());
                }
            }
        }
        if let Some(w) = window {
            let (size, grace) = match w {
                WindowSpec::Tumbling { size, grace } => (*size, *grace),
                WindowSpec::Hopping { size, grace, .. } => (*size, *grace),
                WindowSpec::Session { gap, grace } => (*gap, *grace),
            };
            if size == 0 || i64::try_from(size.saturating_add(grace.unwrap_or(0))).is_err() {
                return Err(SqlError::semantic("the window size must be above zero"));
            }
        }
        // Grouping by exactly the source's key columns (in any order) keeps each group in one input partition.
        let source_keys: Vec<Expr> = plan
            .source
            .columns
            .iter()
            .enumerate()
            .filter(|(_, c)| c.key)
            .map(|(i, _)| Expr::Col(i + PSEUDO.len()))
            .collect();
        let by_source_key = !source_keys.is_empty()
            && source_keys.len() == gb.len()
            && source_keys.iter().all(|k| gb.contains(k));
        Ok(AggPlan {
            source: plan.source.clone(),
            filter: plan.filter.clone(),
            by_source_key,
            group_by: gb,
            key_tys,
            window: window.clone(),
            aggs,
            outputs: out_cols,
            having,
            emit_final: plan.emit == Some(Emit::Final),
        })
    }

    /// Whether `other`'s state can be read by this plan (CREATE OR REPLACE keeps the state).
    pub fn same_state_layout(&self, other: &AggPlan) -> bool {
        self.group_by == other.group_by
            && self.window == other.window
            && self.by_source_key == other.by_source_key
            && self.aggs.len() == other.aggs.len()
            && self
                .aggs
                .iter()
                .zip(&other.aggs)
                .all(|(a, b)| a.func == b.func && a.args == b.args)
    }

    /// The output table's columns.
    pub fn columns(&self) -> Vec<Column> {
        self.outputs.iter().map(|(c, _)| c.clone()).collect()
    }

    pub fn windowed(&self) -> bool {
        self.window.is_some()
    }

    /// The finished row an output expression is evaluated against holds the group key's columns (one per GROUP
    /// BY expression, from index 0), then WINDOWSTART at this index, WINDOWEND, and the aggregate results.
    fn row_wstart(&self) -> usize {
        self.group_by.len()
    }

    fn row_aggs(&self) -> usize {
        self.group_by.len() + 2
    }

    /// The JSON a group key is held as (store key, the state's `k`): one column's value, or an array of several.
    fn key_json(&self, vals: &[Value]) -> J {
        match vals {
            [v] => v.to_json(),
            _ => J::Array(vals.iter().map(Value::to_json).collect()),
        }
    }

    /// The group key's column values from its JSON (`key_json`).
    fn key_values(&self, j: &J) -> std::result::Result<Vec<Value>, String> {
        match (&self.key_tys[..], j) {
            ([ty], _) => Ok(vec![Value::from_json(j, ty)?]),
            (tys, J::Array(a)) if a.len() == tys.len() => a
                .iter()
                .zip(tys)
                .map(|(x, t)| Value::from_json(x, t))
                .collect(),
            (tys, other) => Err(format!(
                "a group key of {} columns is not an array of as many values: {other}",
                tys.len()
            )),
        }
    }

    /// Turns one decoded source row into the aggregation's input: (key bytes, input JSON), `None` when WHERE
    /// drops it or a group key column is NULL (ksqlDB drops such rows).
    fn input(&self, row: &[Value]) -> std::result::Result<Option<(Bytes, Bytes)>, String> {
        if let Some(f) = &self.filter {
            if f.eval(row)? != Value::Bool(true) {
                return Ok(None);
            }
        }
        let mut key = Vec::with_capacity(self.group_by.len());
        for g in &self.group_by {
            let v = g.eval(row)?;
            if v.is_null() {
                return Ok(None);
            }
            key.push(v);
        }
        let mut vals = Vec::with_capacity(self.aggs.len());
        for a in &self.aggs {
            let mut args = Vec::with_capacity(a.args.len());
            for e in &a.args {
                args.push(e.eval(row)?.to_json());
            }
            vals.push(J::Array(args));
        }
        let kj = self.key_json(&key);
        Ok(Some((
            Bytes::from(kj.to_string().into_bytes()),
            Bytes::from(json!({"k": kj, "v": vals}).to_string().into_bytes()),
        )))
    }

    fn init_state(&self) -> J {
        let accs: Vec<J> = self
            .aggs
            .iter()
            .map(|a| match a.func {
                AggFunc::Count => json!(0),
                AggFunc::Avg => json!([0.0, 0]),
                AggFunc::CountDistinct | AggFunc::CollectList | AggFunc::CollectSet => json!([]),
                _ => J::Null,
            })
            .collect();
        json!({"k": null, "a": accs, "p": false, "q": false})
    }

    /// Folds one input into a state.
    fn add(&self, state: &[u8], input: &[u8]) -> Bytes {
        let mut st: J = serde_json::from_slice(state).unwrap_or_else(|_| self.init_state());
        let Ok(inp) = serde_json::from_slice::<J>(input) else {
            return Bytes::copy_from_slice(state);
        };
        st["k"] = inp["k"].clone();
        let was = st["p"].as_bool().unwrap_or(false);
        if let (Some(accs), Some(vals)) = (st["a"].as_array_mut(), inp["v"].as_array()) {
            for ((acc, a), v) in accs.iter_mut().zip(&self.aggs).zip(vals) {
                let arg = v.get(0).cloned().unwrap_or(J::Null);
                fold(a, acc, &arg, v.as_array().is_some_and(|x| x.is_empty()));
            }
        }
        st["q"] = J::Bool(was);
        st["p"] = J::Bool(self.passes(&st));
        Bytes::from(st.to_string().into_bytes())
    }

    /// Joins the states of two sessions a record bridges (`a` the earlier).
    fn merge(&self, a: &[u8], b: &[u8]) -> Bytes {
        let (Ok(mut x), Ok(y)) = (
            serde_json::from_slice::<J>(a),
            serde_json::from_slice::<J>(b),
        ) else {
            return Bytes::copy_from_slice(b);
        };
        let was = x["p"].as_bool().unwrap_or(false) || y["p"].as_bool().unwrap_or(false);
        if x["k"].is_null() {
            x["k"] = y["k"].clone();
        }
        if let (Some(xs), Some(ys)) = (x["a"].as_array_mut(), y["a"].as_array()) {
            for ((acc, a), other) in xs.iter_mut().zip(&self.aggs).zip(ys) {
                merge_acc(a, acc, other);
            }
        }
        x["q"] = J::Bool(was);
        x["p"] = J::Bool(self.passes(&x));
        Bytes::from(x.to_string().into_bytes())
    }

    fn passes(&self, st: &J) -> bool {
        match &self.having {
            None => true,
            Some(h) => self
                .finished_row(st, None)
                .ok()
                .and_then(|row| h.eval(&row).ok())
                .is_some_and(|v| v == Value::Bool(true)),
        }
    }

    /// The row output expressions are evaluated against: key, window bounds, aggregate results.
    fn finished_row(&self, st: &J, w: Option<Window>) -> std::result::Result<Vec<Value>, String> {
        let mut row = Vec::with_capacity(self.row_aggs() + self.aggs.len());
        row.extend(self.key_values(&st["k"])?);
        debug_assert_eq!(row.len(), self.row_wstart());
        row.push(w.map_or(Value::Null, |w| Value::Bigint(w.start)));
        row.push(w.map_or(Value::Null, |w| Value::Bigint(w.end)));
        let empty = Vec::new();
        let accs = st["a"].as_array().unwrap_or(&empty);
        for (a, acc) in self.aggs.iter().zip(accs) {
            row.push(result(a, acc)?);
        }
        Ok(row)
    }

    /// The output columns' values of a state (key first as in `columns()`).
    fn output_values(&self, st: &J, w: Option<Window>) -> std::result::Result<Vec<Value>, String> {
        let row = self.finished_row(st, w)?;
        self.outputs.iter().map(|(_, e)| e.eval(&row)).collect()
    }

    /// The sink record for an update of the table: key bytes (windowed: ksqlDB's windowed key) and value
    /// (`None`: a tombstone). `Ok(None)`: nothing to write.
    #[allow(clippy::type_complexity)]
    fn output(
        &self,
        codec: &format::SinkCodec,
        r: &Record,
    ) -> std::result::Result<Option<(Option<Vec<u8>>, Option<Vec<u8>>)>, Unwritten> {
        let (store_key, window) = if self.windowed() {
            let wk = WindowedKey::decode(r.key_bytes()).ok_or("a windowed key too short")?;
            (wk.key.to_vec(), Some(wk.window))
        } else {
            (r.key_bytes().to_vec(), None)
        };
        let key_json: J = serde_json::from_slice(&store_key).map_err(|e| e.to_string())?;
        let key_vals = self.key_values(&key_json)?;
        // The key columns in the table's column order (a GROUP BY expression's value in its slot).
        let keys: Vec<(&str, Value)> = self
            .outputs
            .iter()
            .filter_map(|(c, e)| match e {
                Expr::Col(j) if c.key => Some((c.name.as_str(), key_vals[*j].clone())),
                _ => None,
            })
            .collect();
        let key_bytes = codec
            .keys(&keys)
            .map_err(Unwritten::Encoding)?
            .map(|k| match window {
                None => k,
                Some(w) => windowed_key(k, w, self.is_session()),
            });
        let Some(v) = r.value.as_deref() else {
            // A session merged into a larger one: ksqlDB deletes its row.
            return Ok(Some((key_bytes, None)));
        };
        let st: J = serde_json::from_slice(v).map_err(|e| e.to_string())?;
        let passes = st["p"].as_bool().unwrap_or(false);
        if !passes {
            let was = st["q"].as_bool().unwrap_or(false);
            return Ok((was && !self.emit_final).then_some((key_bytes, None)));
        }
        let vals = self.output_values(&st, window)?;
        let named: Vec<(&str, Value)> = self
            .outputs
            .iter()
            .zip(vals)
            .filter(|((c, _), _)| !c.key)
            .map(|((c, _), v)| (c.name.as_str(), v))
            .collect();
        let value = codec.value(&named).map_err(Unwritten::Encoding)?;
        Ok(Some((key_bytes, Some(value))))
    }

    fn is_session(&self) -> bool {
        matches!(self.window, Some(WindowSpec::Session { .. }))
    }

    /// The table's rows as a pull query sees them: ROWTIME, ROWPARTITION, ROWOFFSET, the columns, then
    /// WINDOWSTART and WINDOWEND for a windowed table (see `plan::table_scope`). Rows HAVING excludes are not in
    /// the table.
    pub fn table_row(
        &self,
        state: &[u8],
        window: Option<Window>,
    ) -> std::result::Result<Option<Vec<Value>>, String> {
        let st: J = serde_json::from_slice(state).map_err(|e| e.to_string())?;
        if !st["p"].as_bool().unwrap_or(false) {
            return Ok(None);
        }
        let mut row = vec![
            Value::Bigint(window.map_or(0, |w| w.start)),
            Value::Int(0),
            Value::Bigint(0),
        ];
        row.extend(self.output_values(&st, window)?);
        if let Some(w) = window {
            row.push(Value::Bigint(w.start));
            row.push(Value::Bigint(w.end));
        }
        Ok(Some(row))
    }

    /// The store key of a group key (its columns' values in GROUP BY order; its JSON text, as `input` writes it).
    pub fn store_key(&self, vals: &[Value]) -> Vec<u8> {
        self.key_json(vals).to_string().into_bytes()
    }

    /// Per GROUP BY expression, in its order, its key column's index in `columns()`.
    pub fn key_indexes(&self) -> Vec<usize> {
        (0..self.group_by.len())
            .map(|j| {
                self.outputs
                    .iter()
                    .position(|(c, e)| c.key && *e == Expr::Col(j))
                    .expect("checked in new")
            })
            .collect()
    }
}

/// ksqlDB's windowed keys (Kafka Streams' windowed serdes): time windows `key ‖ start:i64be`, sessions
/// `key ‖ end:i64be ‖ start:i64be`.
fn windowed_key(mut k: Vec<u8>, w: Window, session: bool) -> Vec<u8> {
    if session {
        k.extend_from_slice(&w.end.to_be_bytes());
    }
    k.extend_from_slice(&w.start.to_be_bytes());
    k
}

fn num(j: &J) -> Option<f64> {
    j.as_f64()
}

/// Sums two JSON numbers: integers as `i64` (an overflow is an error), anything else as `f64`.
fn add_json(a: &J, b: &J) -> J {
    match (a.as_i64(), b.as_i64()) {
        (Some(x), Some(y)) => x
            .checked_add(y)
            .map_or_else(|| json!(x as f64 + y as f64), |s| json!(s)),
        _ => json!(num(a).unwrap_or(0.0) + num(b).unwrap_or(0.0)),
    }
}

/// Orders two JSON values of one column (numbers, strings; TIMESTAMP, DATE and TIME are numbers).
fn cmp_json(a: &J, b: &J) -> Option<std::cmp::Ordering> {
    match (a, b) {
        (J::Number(x), J::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(x), Some(y)) => Some(x.cmp(&y)),
            _ => x.as_f64()?.partial_cmp(&y.as_f64()?),
        },
        (J::String(x), J::String(y)) => Some(x.cmp(y)),
        (J::Bool(x), J::Bool(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

/// A JSON value read back without a declared type.
fn untyped(j: &J) -> Value {
    match j {
        J::Null => Value::Null,
        J::Bool(b) => Value::Bool(*b),
        J::Number(n) => n
            .as_i64()
            .map_or_else(|| Value::Double(n.as_f64().unwrap_or(0.0)), Value::Bigint),
        J::String(s) => Value::String(s.clone()),
        J::Array(a) => Value::Array(a.iter().map(untyped).collect()),
        J::Object(o) => Value::Struct(
            o.iter()
                .map(|(k, v)| (k.as_str().into(), untyped(v)))
                .collect(),
        ),
    }
}

/// Folds one argument value into an accumulator. `no_arg`: `COUNT(*)`.
fn fold(a: &AggCall, acc: &mut J, arg: &J, no_arg: bool) {
    match a.func {
        AggFunc::Count => {
            if no_arg || !arg.is_null() {
                *acc = json!(acc.as_i64().unwrap_or(0) + 1);
            }
        }
        _ if arg.is_null() => {}
        AggFunc::Sum => {
            *acc = if acc.is_null() {
                arg.clone()
            } else {
                add_json(acc, arg)
            }
        }
        AggFunc::Avg => {
            let s = acc[0].as_f64().unwrap_or(0.0) + num(arg).unwrap_or(0.0);
            let n = acc[1].as_i64().unwrap_or(0) + 1;
            *acc = json!([s, n]);
        }
        AggFunc::Min | AggFunc::Max => {
            let better = acc.is_null()
                || cmp_json(arg, acc).is_some_and(|o| {
                    if a.func == AggFunc::Min {
                        o.is_lt()
                    } else {
                        o.is_gt()
                    }
                });
            if better {
                *acc = arg.clone();
            }
        }
        AggFunc::CountDistinct => {
            if let Some(set) = acc.as_array_mut() {
                if !set.contains(arg) {
                    set.push(arg.clone());
                }
            }
        }
        AggFunc::CollectSet => {
            if let Some(set) = acc.as_array_mut() {
                if set.len() < COLLECT_LIMIT && !set.contains(arg) {
                    set.push(arg.clone());
                }
            }
        }
        AggFunc::CollectList => {
            if let Some(l) = acc.as_array_mut() {
                if l.len() < COLLECT_LIMIT {
                    l.push(arg.clone());
                }
            }
        }
        AggFunc::LatestByOffset => *acc = arg.clone(),
        AggFunc::EarliestByOffset => {
            if acc.is_null() {
                *acc = arg.clone();
            }
        }
    }
}

/// How many values COLLECT_LIST and COLLECT_SET keep per group: later ones are ignored, as ksqlDB's
/// `ksql.functions.collect_list.limit` / `collect_set.limit` (default 1000) do, so a group's state stays bounded.
const COLLECT_LIMIT: usize = 1000;

fn merge_acc(a: &AggCall, acc: &mut J, other: &J) {
    match a.func {
        AggFunc::Count => *acc = json!(acc.as_i64().unwrap_or(0) + other.as_i64().unwrap_or(0)),
        AggFunc::Sum => {
            if other.is_null() {
            } else if acc.is_null() {
                *acc = other.clone();
            } else {
                *acc = add_json(acc, other);
            }
        }
        AggFunc::Avg => {
            *acc = json!([
                acc[0].as_f64().unwrap_or(0.0) + other[0].as_f64().unwrap_or(0.0),
                acc[1].as_i64().unwrap_or(0) + other[1].as_i64().unwrap_or(0)
            ])
        }
        AggFunc::Min | AggFunc::Max | AggFunc::LatestByOffset => {
            if !other.is_null() {
                fold(a, acc, other, false)
            }
        }
        AggFunc::EarliestByOffset => {
            if acc.is_null() {
                *acc = other.clone();
            }
        }
        AggFunc::CountDistinct | AggFunc::CollectSet | AggFunc::CollectList => {
            for v in other.as_array().into_iter().flatten() {
                fold(a, acc, v, false);
            }
        }
    }
}

/// An accumulator's result value.
fn result(a: &AggCall, acc: &J) -> std::result::Result<Value, String> {
    Ok(match a.func {
        AggFunc::Count => Value::Bigint(acc.as_i64().unwrap_or(0)),
        AggFunc::CountDistinct => Value::Bigint(acc.as_array().map_or(0, Vec::len) as i64),
        AggFunc::Sum => {
            // ksqlDB: the sum of no values is 0.
            let zero = json!(0);
            let v = if acc.is_null() { &zero } else { acc };
            match &a.out_ty {
                Some(SqlType::Int) => Value::Int(
                    i32::try_from(
                        v.as_i64()
                            .ok_or("SUM overflows INT: CAST the argument to BIGINT")?,
                    )
                    .map_err(|_| "SUM overflows INT: CAST the argument to BIGINT")?,
                ),
                Some(SqlType::Bigint) => Value::Bigint(
                    v.as_i64()
                        .ok_or("SUM overflows BIGINT: CAST the argument to DOUBLE")?,
                ),
                Some(t) => Value::from_json(&json!(v.as_f64().unwrap_or(0.0)), t)?,
                None => untyped(v),
            }
        }
        AggFunc::Avg => {
            let n = acc[1].as_i64().unwrap_or(0);
            if n == 0 {
                Value::Null
            } else {
                Value::Double(acc[0].as_f64().unwrap_or(0.0) / n as f64)
            }
        }
        _ => match &a.out_ty {
            Some(t) => Value::from_json(acc, t)?,
            None => untyped(acc),
        },
    })
}

/// A stateful query running on `fjord-streams`: the instance (restarted when it fails) and what pull queries
/// need to read its store.
pub struct TableQuery {
    pub plan: AggPlan,
    streams: Arc<Mutex<Option<KafkaStreams>>>,
}

impl TableQuery {
    /// The entries of the store (of `key`, its columns' values in GROUP BY order, or all), as table rows.
    pub fn rows(&self, key: Option<&[Value]>) -> std::result::Result<Vec<Vec<Value>>, String> {
        let g = self.streams.lock().expect("table query");
        let Some(s) = g.as_ref() else {
            return Err(
                "the query that materializes this table is restarting: try again in a moment"
                    .into(),
            );
        };
        let k = key.map(|v| self.plan.store_key(v));
        let entries = s
            .query_store(STORE, k.as_deref())
            .map_err(|e| e.to_string())?;
        drop(g);
        let mut rows = Vec::new();
        for e in entries {
            if let Some(r) = self.plan.table_row(&e.value, e.window)? {
                rows.push(r);
            }
        }
        Ok(rows)
    }
}

/// The repartition step's name (`<application id>-groupby-repartition`).
const REPARTITION: &str = "groupby";

/// What a persistent query leaves in the cluster besides its sink: its consumer groups (a stateless query's
/// `_fjord_sql_<id>`, an aggregation's or a join's application id; the same unless the id is long) and an
/// aggregation's or a join's changelog and repartition topics. ksqlDB removes these when the query is terminated.
pub fn leftovers(query_id: &str) -> (Vec<String>, Vec<String>) {
    let app = application_id(query_id);
    let mut groups = vec![format!("_fjord_sql_{query_id}")];
    if groups[0] != app {
        groups.push(app.clone());
    }
    let mut topics = vec![
        format!("{app}-{STORE}-changelog"),
        format!("{app}-{REPARTITION}-repartition"),
    ];
    topics.extend(super::join::internal_topics(&app));
    (groups, topics)
}

/// The application id of a query (at most 60 characters, as the library requires).
pub(super) fn application_id(query_id: &str) -> String {
    let id = format!("_fjord_sql_{query_id}");
    if id.len() <= 60 {
        return id;
    }
    // Keep the distinct sequence number at the end (a query id from the command topic may be anything: the
    // tail is at most 20 bytes and both cuts fall on character boundaries).
    let last = query_id.rsplit('_').next().unwrap_or("");
    let mut start = last.len().saturating_sub(20);
    while !last.is_char_boundary(start) {
        start += 1;
    }
    let tail = &last[start..];
    let mut cut = 59 - tail.len();
    while !id.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}_{tail}", &id[..cut])
}

/// The records of `src`'s topic as a stream (event time from its TIMESTAMP column when it has one), and the
/// wait to call before decoding a record: a record whose schema the registry cannot be asked about now is
/// waited for, not skipped (the streams library has no failing operator; its thread blocks, so nothing after
/// the record is committed).
#[allow(clippy::type_complexity)]
pub(super) fn source_stream(
    b: &StreamsBuilder,
    src: &SourceDef,
    stop: &Arc<AtomicBool>,
) -> (KStream, Arc<dyn Fn(&Record) + Send + Sync>) {
    let (stop_wait, src_wait) = (stop.clone(), src.clone());
    let wait_for_registry: Arc<dyn Fn(&Record) + Send + Sync> = Arc::new(move |r: &Record| {
        let mut pause = Duration::from_millis(100);
        while let Err(e) =
            format::registry_reachable(&src_wait, r.key.as_deref(), r.value.as_deref())
        {
            if stop_wait.load(Ordering::SeqCst) {
                return;
            }
            tracing::warn!(error = %e, "waiting for the schema registry before the next record");
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_secs(5));
        }
    });
    let wait_in_extractor = wait_for_registry.clone();
    let source = if src.timestamp.is_some() {
        // Event time from the TIMESTAMP column (ROWTIME as decode sets it); a row that does not decode keeps
        // the record's time and is counted when the map after the source skips it.
        let s2 = src.clone();
        b.stream_with(
            &src.topic,
            fjord_streams::Consumed::with_timestamp_extractor(move |r| {
                wait_in_extractor(r);
                format::decode(
                    &s2,
                    r.key.as_deref(),
                    r.value.as_deref(),
                    (r.timestamp, 0, 0),
                )
                .ok()
                .flatten()
                .and_then(|row| row[0].as_i64())
                .unwrap_or(r.timestamp)
            }),
        )
    } else {
        b.stream(&src.topic)
    };
    (source, wait_for_registry)
}

/// Why an update of the table is not written: its row (read back or evaluated), or the row's encoding for the
/// sink (a value its registered schema cannot hold).
#[derive(Debug)]
enum Unwritten {
    Row(String),
    Encoding(String),
}

impl From<String> for Unwritten {
    fn from(e: String) -> Unwritten {
        Unwritten::Row(e)
    }
}

impl From<&str> for Unwritten {
    fn from(e: &str) -> Unwritten {
        Unwritten::Row(e.to_string())
    }
}

/// The sink record for the table update `r`, counted. One not written is counted and skipped; but a row that
/// cannot be encoded for `sink` with `fail_on_bad_record` (`ksql.fail.on.deserialization.error`) is an Err: the
/// instance stops at the update (its input not committed), as it does at an input record that does not decode.
fn sink_record(
    p: &AggPlan,
    codec: &format::SinkCodec,
    sink: &SourceDef,
    r: &Record,
    st: &QueryStats,
    fail_on_bad_record: bool,
) -> std::result::Result<Option<Record>, String> {
    Ok(match p.output(codec, r) {
        Ok(Some((k, v))) => {
            st.records_out.fetch_add(1, Ordering::Relaxed);
            Some(Record {
                key: k.map(Bytes::from),
                value: v.map(Bytes::from),
                timestamp: r.timestamp,
            })
        }
        Ok(None) => None,
        Err(Unwritten::Encoding(e)) if fail_on_bad_record => {
            st.errors.fetch_add(1, Ordering::Relaxed);
            return Err(stops_at_row(&sink.topic, &e));
        }
        Err(Unwritten::Row(e) | Unwritten::Encoding(e)) => {
            st.errors.fetch_add(1, Ordering::Relaxed);
            *st.last_error.lock().expect("stats") = Some(e);
            None
        }
    })
}

fn builder(
    plan: &Arc<AggPlan>,
    sink: &SourceDef,
    fail_on_bad_record: bool,
    stats: &Arc<QueryStats>,
    stop: &Arc<AtomicBool>,
) -> std::result::Result<StreamsBuilder, String> {
    let b = StreamsBuilder::new();
    let src = plan.source.clone();
    let p = plan.clone();
    let st = stats.clone();
    let (source, wait_for_registry) = source_stream(&b, &src, stop);
    let inputs = source.try_flat_map(move |r: Record| {
        st.records_in.fetch_add(1, Ordering::Relaxed);
        wait_for_registry(&r);
        let decoded = format::decode(
            &src,
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
            Some(row) => p.input(&row),
            None => Ok(None),
        });
        Ok(match out {
            Ok(Some((k, v))) => Some(Record {
                key: Some(k),
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
    let grouped = if plan.by_source_key {
        // Records of one key are in one partition already (same key column, same key bytes).
        inputs.group_by_key()
    } else {
        inputs.group_by(REPARTITION, |r| r.key.clone().unwrap_or_default())
    };
    let (pa, pm) = (plan.clone(), plan.clone());
    let init_state = Bytes::from(plan.init_state().to_string().into_bytes());
    let ms = |v: u64| Duration::from_millis(v);
    let table = match &plan.window {
        None => grouped.aggregate(
            STORE,
            move || init_state.clone(),
            move |_, r, acc| pa.add(acc, r.value_bytes()),
        ),
        Some(w) => {
            let windowed = match *w {
                WindowSpec::Tumbling { size, grace } => grouped.windowed_by(
                    TimeWindows::tumbling(ms(size)).grace(ms(grace.unwrap_or(DEFAULT_GRACE_MS))),
                ),
                WindowSpec::Hopping {
                    size,
                    advance,
                    grace,
                } => grouped.windowed_by(
                    TimeWindows::hopping(ms(size), ms(advance))
                        .grace(ms(grace.unwrap_or(DEFAULT_GRACE_MS))),
                ),
                WindowSpec::Session { gap, grace } => grouped.windowed_by(
                    SessionWindows::with_inactivity_gap(ms(gap))
                        .grace(ms(grace.unwrap_or(DEFAULT_GRACE_MS))),
                ),
            };
            let t = windowed.aggregate(
                STORE,
                move || init_state.clone(),
                move |_, r, acc| pa.add(acc, r.value_bytes()),
                Some(Box::new(move |_: &[u8], a: &[u8], b: &[u8]| pm.merge(a, b))),
            );
            if plan.emit_final {
                t.suppress(Suppressed::UntilWindowCloses)
            } else {
                t
            }
        }
    };
    let (p, s2, st) = (plan.clone(), sink.clone(), stats.clone());
    // The sink's registry schemas (AVRO, PROTOBUF, JSON_SR; registered when the query was created), found on the
    // first output: a registry that cannot answer then stops the instance at the record (not committed), and the
    // restarted one tries again.
    let codec: Arc<std::sync::OnceLock<format::SinkCodec>> = Arc::new(std::sync::OnceLock::new());
    table
        .to_stream()
        .try_flat_map(move |r: Record| {
            let codec = match codec.get() {
                Some(c) => c,
                None => {
                    let c = format::SinkCodec::new(&s2, false).map_err(|e| {
                        format!("cannot find the schemas {} is written with: {e}", s2.name)
                    })?;
                    codec.get_or_init(|| c)
                }
            };
            sink_record(&p, codec, &s2, &r, &st, fail_on_bad_record)
        })
        .to(&sink.topic);
    Ok(b)
}

/// Starts the stateful query writing `sink` on a supervisor thread: it runs the streams instance, copies its
/// late-record counter into `stats`, restarts it (from the committed offsets and the changelog) when it fails,
/// and closes it (a final commit) when `stop` is set.
pub fn start(
    q: &QueryDef,
    bootstrap: &str,
    plan: AggPlan,
    sink: &SourceDef,
    stop: Arc<AtomicBool>,
    stats: Arc<QueryStats>,
) -> Result<(Arc<TableQuery>, std::thread::JoinHandle<()>)> {
    let plan = Arc::new(plan);
    let topology = builder(&plan, sink, q.fail_on_bad_record, &stats, &stop)
        .map_err(SqlError::execution)?
        .build()
        .map_err(|e| SqlError::execution(format!("the query's topology is invalid: {e}")))?;
    let tq = Arc::new(TableQuery {
        plan: (*plan).clone(),
        streams: Arc::new(Mutex::new(None)),
    });
    let thread = supervise(
        &q.id,
        bootstrap,
        q.exactly_once(),
        topology,
        tq.streams.clone(),
        stop,
        stats,
    )?;
    Ok((tq, thread))
}

/// Runs `topology` for query `query_id` on a supervisor thread: the streams instance (kept in `slot` while it
/// runs, for its stores), its late-record counter copied into `stats`, restarted (from the committed offsets
/// and the changelogs) when it fails, and closed (a final commit) when `stop` is set.
pub(super) fn supervise(
    query_id: &str,
    bootstrap: &str,
    exactly_once: bool,
    topology: fjord_streams::Topology,
    slot: Arc<Mutex<Option<KafkaStreams>>>,
    stop: Arc<AtomicBool>,
    stats: Arc<QueryStats>,
) -> Result<std::thread::JoinHandle<()>> {
    let mut cfg = StreamsConfig::new(&application_id(query_id), bootstrap);
    cfg.instance_id = "sql".into();
    cfg.commit_interval = Duration::from_millis(500);
    if exactly_once {
        // Outputs, changelogs and input offsets commit in one transaction; the stable instance id gives a
        // stable transactional id, so a restarted query fences its predecessor's open transaction.
        cfg.processing_guarantee = fjord_streams::ProcessingGuarantee::ExactlyOnce;
    }
    let id = query_id.to_string();
    let late_base = Arc::new(AtomicU64::new(0));
    std::thread::Builder::new()
        .name(format!("sql-{query_id}"))
        .spawn(move || {
            // Failures in a row, for the pause before the next restart.
            let mut streak = 0;
            let mut fail = |e: String| {
                streak = if stats.failing() { streak + 1 } else { 1 };
                stats.failed(e);
                stats.restart_pause(streak, &stop);
            };
            while !stop.load(Ordering::SeqCst) {
                let started = std::time::Instant::now();
                match KafkaStreams::start(topology.clone(), cfg.clone()) {
                    Ok(s) => *slot.lock().expect("table query") = Some(s),
                    Err(e) => {
                        tracing::warn!(query = id, error = %e, "stateful query could not start; retrying");
                        fail(format!("the query could not start: {e}"));
                        continue;
                    }
                }
                let failed = loop {
                    let g = slot.lock().expect("table query");
                    let s = g.as_ref().expect("set above");
                    let m = s.metrics();
                    stats.late_records.store(
                        late_base.load(Ordering::Relaxed) + m.late_records_dropped,
                        Ordering::Relaxed,
                    );
                    if let StreamsState::Failed(e) = s.state() {
                        break Some(e);
                    }
                    drop(g);
                    // A restarted instance runs again once it commits, or stays up with nothing to process
                    // (and so nothing to fail on).
                    if (m.commits > 0
                        || (m.records_processed == 0 && started.elapsed() >= HEALTHY_AFTER))
                        && stats.failing()
                    {
                        stats.recovered(&id);
                    }
                    if stop.load(Ordering::SeqCst) {
                        break None;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                };
                let s = slot.lock().expect("table query").take();
                if let Some(s) = s {
                    late_base.fetch_add(s.metrics().late_records_dropped, Ordering::Relaxed);
                    let _ = s.close();
                }
                if let Some(e) = failed {
                    tracing::warn!(query = id, error = %e, "stateful query failed; restarting from its committed offsets and changelog");
                    fail(e);
                }
            }
        })
        .map_err(|e| SqlError::execution(format!("cannot start a thread: {e}")))
}

/// A pull query on a materialized table: the rows of its store that pass WHERE, projected. A `WHERE key = x`
/// conjunct reads only that key.
pub fn pull(
    tq: &TableQuery,
    plan: &SelectPlan,
    tx: &tokio::sync::mpsc::Sender<std::result::Result<Row, String>>,
    stall: std::time::Duration,
) -> std::result::Result<(), String> {
    // One key is read when WHERE fixes every key column (`a = x AND b = y`); otherwise every row is read and
    // WHERE applied to each.
    let key: Option<Vec<Value>> = tq
        .plan
        .key_indexes()
        .iter()
        .zip(&tq.plan.key_tys)
        .map(|(&i, ty)| {
            plan.filter
                .as_ref()
                .and_then(|f| key_equality(f, PSEUDO.len() + i))
                // Only a literal of the key's own type has the key's store bytes.
                .filter(|v| Value::from_json(&v.to_json(), ty).ok().as_ref() == Some(v))
        })
        .collect();
    let mut sent = 0u64;
    for row in tq.rows(key.as_deref())? {
        if plan.limit.is_some_and(|l| sent >= l) {
            break;
        }
        if let Some(vals) = super::apply(plan, &row)? {
            // As a push query: a client that takes nothing for `stall` ends it (thread and slot freed).
            if !super::send_bounded(tx, Ok(Row::of(&vals)), stall) {
                if tx.is_closed() {
                    return Ok(());
                }
                return Err(format!(
                    "the client read no row for {} s: the pull query was ended",
                    stall.as_secs_f64()
                ));
            }
            sent += 1;
        }
    }
    Ok(())
}

/// The literal `x` of a top-level `key = x` conjunct of `filter` (`key_col`: the key column's row index).
fn key_equality(filter: &Expr, key_col: usize) -> Option<Value> {
    match filter {
        Expr::Bin(BinOp::And, a, b) => {
            key_equality(a, key_col).or_else(|| key_equality(b, key_col))
        }
        Expr::Bin(BinOp::Eq, a, b) => match (&**a, &**b) {
            (Expr::Col(i), Expr::Lit(v)) | (Expr::Lit(v), Expr::Col(i))
                if *i == key_col && !v.is_null() =>
            {
                Some(v.clone())
            }
            _ => None,
        },
        _ => None,
    }
}

/// The output columns of an aggregation (for `CREATE TABLE ... AS SELECT`), or its planning error.
pub fn output_columns(plan: &SelectPlan) -> Result<Vec<Column>> {
    Ok(AggPlan::new(plan)?.columns())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{Catalog, Format};
    use crate::parser::{parse_statement, SourceKind, Statement};
    use crate::plan::plan_select;

    fn catalog() -> Catalog {
        let mut c = Catalog::default();
        let col = |n: &str, ty: SqlType, key: bool| Column {
            name: n.into(),
            ty,
            key,
        };
        c.put(SourceDef {
            name: "CLICKS".into(),
            kind: SourceKind::Stream,
            columns: vec![
                col("USERID", SqlType::String, true),
                col("PAGE", SqlType::String, false),
                col("MS", SqlType::Bigint, false),
                col("PRICE", SqlType::Double, false),
                col("QTY", SqlType::Int, false),
            ],
            topic: "clicks".into(),
            key_format: Format::Kafka,
            value_format: Format::Json,
            timestamp: None,
            statement: String::new(),
            query: None,
        });
        c
    }

    fn plan(sql: &str) -> Result<AggPlan> {
        let Statement::CreateSource {
            as_select: Some(sel),
            ..
        } = parse_statement(sql)?.statement
        else {
            panic!("not a CTAS: {sql}")
        };
        AggPlan::new(&plan_select(&sel, &catalog())?)
    }

    fn sink(p: &AggPlan) -> SourceDef {
        SourceDef {
            name: "T".into(),
            kind: SourceKind::Table,
            columns: p.columns(),
            topic: "T".into(),
            key_format: Format::Kafka,
            value_format: Format::Json,
            timestamp: None,
            statement: String::new(),
            query: None,
        }
    }

    fn row(user: &str, page: &str, ms: i64, price: f64, qty: i32) -> Vec<Value> {
        vec![
            Value::Bigint(ms),
            Value::Int(0),
            Value::Bigint(0),
            Value::String(user.into()),
            Value::String(page.into()),
            Value::Bigint(ms),
            Value::Double(price),
            Value::Int(qty),
        ]
    }

    /// Folds rows (of one key) as the library would: the state after each, from the plan's initial state.
    fn fold_rows(p: &AggPlan, rows: &[Vec<Value>]) -> Vec<Bytes> {
        let mut st = Bytes::from(p.init_state().to_string().into_bytes());
        let mut out = Vec::new();
        for r in rows {
            let (_, input) = p.input(r).unwrap().expect("passes WHERE");
            st = p.add(&st, &input);
            out.push(st.clone());
        }
        out
    }

    fn value_of(p: &AggPlan, st: &Bytes, key: &[u8]) -> Option<J> {
        let s = format::SinkCodec::new(&sink(p), false).unwrap();
        let r = Record {
            key: Some(Bytes::copy_from_slice(key)),
            value: Some(st.clone()),
            timestamp: 0,
        };
        p.output(&s, &r).unwrap().map(|(_, v)| {
            v.map(|v| serde_json::from_slice(&v).unwrap())
                .unwrap_or(J::Null)
        })
    }

    #[test]
    fn every_aggregate_function_folds_and_finishes_like_the_reference() {
        let p = plan(
            "CREATE TABLE t AS SELECT userid, COUNT(*) AS n, SUM(price) AS s, SUM(qty) AS sq, AVG(price) AS a, \
             MIN(ms) AS lo, MAX(page) AS hi, COUNT_DISTINCT(page) AS d, LATEST_BY_OFFSET(page) AS last, \
             COUNT(*) * 2 AS twice FROM clicks WHERE qty > 0 GROUP BY userid",
        )
        .unwrap();
        assert_eq!(p.columns()[0].name, "USERID");
        assert!(p.columns()[0].key);
        assert!(p.by_source_key);
        // WHERE drops this one.
        assert!(p.input(&row("u", "x", 1, 1.0, 0)).unwrap().is_none());
        let rows = [
            row("u", "b", 30, 1.5, 1),
            row("u", "a", 10, 2.5, 2),
            row("u", "b", 20, 3.0, 3),
        ];
        let states = fold_rows(&p, &rows);
        let v = value_of(&p, states.last().unwrap(), b"\"u\"").unwrap();
        assert_eq!(
            v,
            json!({"N": 3, "S": 7.0, "SQ": 6, "A": 7.0 / 3.0, "LO": 10, "HI": "b", "D": 2, "LAST": "b", "TWICE": 6})
        );
    }

    /// GROUP BY of two expressions keys the table by both (two PRIMARY KEY columns), holds the group key as a
    /// JSON array in the store, and writes ksqlDB's JSON key record `{"USERID":..,"PAGE":..}` in the columns'
    /// order (a windowed one followed by the window start). A single-key query's store keys and states stay as
    /// they were, so its changelog is read back by an upgraded server. Before, GROUP BY of two expressions was
    /// refused.
    #[test]
    fn group_by_two_columns_keys_the_table_by_both() {
        let p = plan(
            "CREATE TABLE t AS SELECT userid, page, COUNT(*) AS n, SUM(qty) AS s FROM clicks GROUP BY userid, page",
        )
        .unwrap();
        let keys: Vec<(String, bool)> = p.columns().into_iter().map(|c| (c.name, c.key)).collect();
        assert_eq!(
            keys,
            [("USERID", true), ("PAGE", true), ("N", false), ("S", false)]
                .map(|(n, k)| (n.to_string(), k))
        );
        assert!(!p.by_source_key, "USERID alone is the source's key");
        let (k, input) = p.input(&row("u", "home", 1, 0.0, 2)).unwrap().unwrap();
        assert_eq!(&k[..], br#"["u","home"]"#);
        assert_eq!(
            p.store_key(&[Value::String("u".into()), Value::String("home".into())]),
            k
        );
        let input: J = serde_json::from_slice(&input).unwrap();
        assert_eq!(input["k"], json!(["u", "home"]));
        // A NULL key column drops the row, as a NULL group key does.
        let mut null_page = row("u", "x", 1, 0.0, 2);
        null_page[4] = Value::Null;
        assert!(p.input(&null_page).unwrap().is_none());
        let st = fold_rows(
            &p,
            &[row("u", "home", 1, 0.0, 2), row("u", "home", 2, 0.0, 5)],
        )
        .pop()
        .unwrap();
        let mut json_sink = sink(&p);
        json_sink.key_format = Format::Json;
        let codec = format::SinkCodec::new(&json_sink, false).unwrap();
        let r = Record {
            key: Some(k.clone()),
            value: Some(st.clone()),
            timestamp: 0,
        };
        let (key, value) = p.output(&codec, &r).unwrap().unwrap();
        assert_eq!(key.unwrap(), br#"{"USERID":"u","PAGE":"home"}"#);
        let value: J = serde_json::from_slice(&value.unwrap()).unwrap();
        assert_eq!(value, json!({"N": 2, "S": 7}));
        // A pull query's row: the pseudo-columns, then both key columns.
        let pulled = p.table_row(&st, None).unwrap().unwrap();
        assert_eq!(
            pulled[3..5],
            [Value::String("u".into()), Value::String("home".into())]
        );
        assert_eq!(p.key_indexes(), vec![0, 1]);

        // Selected in another order than GROUP BY's: the key record follows the columns.
        let q = plan(
            "CREATE TABLE t AS SELECT page, userid, COUNT(*) AS n FROM clicks \
             WINDOW TUMBLING (SIZE 1 MINUTE) GROUP BY userid, page",
        )
        .unwrap();
        assert_eq!(q.key_indexes(), vec![1, 0]);
        let st = fold_rows(&q, &[row("u", "home", 1, 0.0, 2)]).pop().unwrap();
        let mut json_sink = sink(&q);
        json_sink.key_format = Format::Json;
        let codec = format::SinkCodec::new(&json_sink, false).unwrap();
        let w = Window {
            start: 0,
            end: 60_000,
        };
        let r = Record {
            key: Some(WindowedKey::encode(br#"["u","home"]"#, w)),
            value: Some(st),
            timestamp: 0,
        };
        let (key, _) = q.output(&codec, &r).unwrap().unwrap();
        assert_eq!(
            key.unwrap(),
            [
                br#"{"PAGE":"home","USERID":"u"}"#.as_slice(),
                &0i64.to_be_bytes()
            ]
            .concat()
        );

        // One GROUP BY expression: the store key and the state's key are the value's JSON, as before.
        let one =
            plan("CREATE TABLE t AS SELECT page, COUNT(*) AS n FROM clicks GROUP BY page").unwrap();
        let (k, input) = one.input(&row("u", "home", 1, 0.0, 2)).unwrap().unwrap();
        assert_eq!(&k[..], br#""home""#);
        let input: J = serde_json::from_slice(&input).unwrap();
        assert_eq!(input, json!({"k": "home", "v": [[]]}));
        // Every GROUP BY expression must be selected.
        let e = plan(
            "CREATE TABLE t AS SELECT userid, COUNT(*) AS n FROM clicks GROUP BY userid, page",
        )
        .unwrap_err();
        assert!(e.to_string().contains("every GROUP BY expression"), "{e}");
    }

    #[test]
    fn having_emits_a_tombstone_only_for_a_row_that_was_in_the_table() {
        // ksqlDB's example (confluentinc/ksql#6405): values -5, 6, -2, -1 with HAVING SUM > 0 give nothing, a row,
        // a tombstone, and nothing.
        let p = plan(
            "CREATE TABLE t AS SELECT userid, SUM(qty) AS s FROM clicks GROUP BY userid HAVING SUM(qty) > 0",
        )
        .unwrap();
        let rows: Vec<_> = [-5, 6, -2, -1]
            .into_iter()
            .map(|q| row("u", "p", 1, 0.0, q))
            .collect();
        let outs: Vec<Option<J>> = fold_rows(&p, &rows)
            .iter()
            .map(|s| value_of(&p, s, b"\"u\""))
            .collect();
        assert_eq!(outs, vec![None, Some(json!({"S": 1})), Some(J::Null), None]);
    }

    /// An update whose row its sink's registered schema cannot hold (a value schema with a field the row has
    /// no value for) is counted and skipped by default; with `ksql.fail.on.deserialization.error` true it is an
    /// error that stops the instance at it, saying why. Before, it was counted and dropped either way (its input
    /// committed). Any other update is written and counted alike.
    #[test]
    fn a_row_the_sink_schema_cannot_hold_stops_the_query_when_set() {
        let p =
            plan("CREATE TABLE t AS SELECT page, COUNT(*) AS n FROM clicks GROUP BY page").unwrap();
        let sink = sink(&p);
        let schema = |text: &str| {
            let d = fjord_registry::wire::AvroDecoder::compile(text, &[]).unwrap();
            Arc::new(crate::registry::Registered::Avro(Box::new(d)))
        };
        let narrow = format::SinkCodec::with_value_schema(
            Format::Kafka,
            (
                1,
                schema(
                    r#"{"type":"record","name":"R","fields":[{"name":"N","type":"long"},{"name":"MORE","type":"string"}]}"#,
                ),
            ),
        );
        let fits = format::SinkCodec::with_value_schema(
            Format::Kafka,
            (
                2,
                schema(
                    r#"{"type":"record","name":"R","fields":[{"name":"N","type":["null","long"],"default":null}]}"#,
                ),
            ),
        );
        let r = Record {
            key: Some(Bytes::from_static(b"\"home\"")),
            value: Some(fold_rows(&p, &[row("u", "home", 1, 0.0, 1)]).pop().unwrap()),
            timestamp: 5,
        };
        let st = QueryStats::default();
        assert!(sink_record(&p, &narrow, &sink, &r, &st, false)
            .unwrap()
            .is_none());
        assert_eq!(st.errors.load(Ordering::Relaxed), 1);
        assert!(st.last_error.lock().unwrap().is_some());
        let e = sink_record(&p, &narrow, &sink, &r, &st, true).unwrap_err();
        assert!(
            e.contains("cannot be written to T")
                && e.contains("ksql.fail.on.deserialization.error is true"),
            "{e}"
        );
        assert_eq!(st.errors.load(Ordering::Relaxed), 2);
        assert_eq!(st.records_out.load(Ordering::Relaxed), 0);
        for fail in [false, true] {
            let out = sink_record(&p, &fits, &sink, &r, &st, fail)
                .unwrap()
                .unwrap();
            assert_eq!(out.key.as_deref(), Some(b"home".as_slice()));
            assert_eq!(out.timestamp, 5);
            assert!(out.value.is_some());
        }
        assert_eq!(st.records_out.load(Ordering::Relaxed), 2);
        assert_eq!(st.errors.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn windowed_keys_take_ksqldb_formats_and_sessions_merge() {
        let p = plan(
            "CREATE TABLE t AS SELECT userid, WINDOWSTART AS ws, COUNT(*) AS n, MAX(ms) AS hi FROM clicks \
             WINDOW SESSION (5 SECONDS) GROUP BY userid",
        )
        .unwrap();
        assert!(p.is_session());
        let s = format::SinkCodec::new(&sink(&p), false).unwrap();
        let a = fold_rows(&p, &[row("u", "p", 1000, 0.0, 1)]).pop().unwrap();
        let b = fold_rows(
            &p,
            &[row("u", "p", 7000, 0.0, 1), row("u", "p", 8000, 0.0, 1)],
        )
        .pop()
        .unwrap();
        let merged = p.merge(&a, &b);
        let w = Window {
            start: 1000,
            end: 8000,
        };
        let r = Record {
            key: Some(WindowedKey::encode(b"\"u\"", w)),
            value: Some(merged),
            timestamp: 8000,
        };
        let (k, v) = p.output(&s, &r).unwrap().unwrap();
        // Session keys: key, end, start.
        let mut want = b"u".to_vec();
        want.extend_from_slice(&8000i64.to_be_bytes());
        want.extend_from_slice(&1000i64.to_be_bytes());
        assert_eq!(k.unwrap(), want);
        let v: J = serde_json::from_slice(&v.unwrap()).unwrap();
        assert_eq!(v, json!({"WS": 1000, "N": 3, "HI": 8000}));
        // A session merged away is deleted.
        let gone = Record {
            key: r.key.clone(),
            value: None,
            timestamp: 0,
        };
        assert_eq!(p.output(&s, &gone).unwrap().unwrap().1, None);

        let t = plan(
            "CREATE TABLE t AS SELECT userid, COUNT(*) AS n FROM clicks WINDOW TUMBLING (SIZE 1 MINUTE) GROUP BY userid",
        )
        .unwrap();
        assert_eq!(
            windowed_key(b"k".to_vec(), w, false),
            [b"k".as_slice(), &1000i64.to_be_bytes()].concat()
        );
        assert!(!t.is_session());
    }

    #[test]
    fn a_table_row_carries_its_window_and_key_lookups_need_the_key_type() {
        let p = plan(
            "CREATE TABLE t AS SELECT page, COUNT(*) AS n FROM clicks WINDOW HOPPING (SIZE 10 SECONDS, ADVANCE BY 5 SECONDS) GROUP BY page",
        )
        .unwrap();
        assert!(!p.by_source_key, "grouping by a value column repartitions");
        let st = fold_rows(&p, &[row("u", "home", 1, 0.0, 1)]).pop().unwrap();
        let r = p
            .table_row(
                &st,
                Some(Window {
                    start: 0,
                    end: 10_000,
                }),
            )
            .unwrap()
            .unwrap();
        assert_eq!(
            r[3..],
            [
                Value::String("home".into()),
                Value::Bigint(1),
                Value::Bigint(0),
                Value::Bigint(10_000)
            ]
        );
        let eq = Expr::Bin(
            BinOp::And,
            Box::new(Expr::Bin(
                BinOp::Gt,
                Box::new(Expr::Col(7)),
                Box::new(Expr::Lit(Value::Int(1))),
            )),
            Box::new(Expr::Bin(
                BinOp::Eq,
                Box::new(Expr::Lit(Value::String("home".into()))),
                Box::new(Expr::Col(3)),
            )),
        );
        assert_eq!(key_equality(&eq, 3), Some(Value::String("home".into())));
        assert_eq!(key_equality(&eq, 4), None);
    }

    #[test]
    fn mistakes_in_aggregations_are_clear_positioned_errors() {
        let e = plan("CREATE TABLE t AS SELECT userid, SUM(page) AS s FROM clicks GROUP BY userid")
            .unwrap_err();
        assert!(e.message.contains("needs a number"), "{e}");
        let pos = e.pos.expect("positioned");
        assert_eq!((pos.line, pos.column), (1, 34), "{e}");
        let e = plan(
            "CREATE TABLE t AS SELECT userid,\n  AVG(ms, price) AS a FROM clicks GROUP BY userid",
        )
        .unwrap_err();
        assert!(e.message.contains("expected 1 argument"), "{e}");
        assert_eq!(e.pos.map(|p| p.line), Some(2), "{e}");
        let e =
            plan("CREATE TABLE t AS SELECT COUNT(*) AS n FROM clicks GROUP BY userid").unwrap_err();
        assert!(e.message.contains("must be in the SELECT list"), "{e}");
        let e = plan("CREATE TABLE t AS SELECT userid, page, COUNT(*) FROM clicks GROUP BY userid")
            .unwrap_err();
        assert!(e.message.contains("neither in GROUP BY"), "{e}");
        let e =
            plan("CREATE TABLE t AS SELECT userid, COUNT(*) + ms AS x FROM clicks GROUP BY userid")
                .unwrap_err();
        assert!(e.message.contains("neither in GROUP BY"), "{e}");
        let e =
            plan("CREATE TABLE t AS SELECT userid, SUM(COUNT(*)) AS x FROM clicks GROUP BY userid")
                .unwrap_err();
        assert!(e.message.contains("nested"), "{e}");
        let e = plan(
            "CREATE TABLE t AS SELECT userid, COUNT(*) AS n FROM clicks GROUP BY userid HAVING SUM(page) > 1",
        )
        .unwrap_err();
        assert!(e.message.contains("needs a number"), "{e}");
        assert!(e.pos.is_some(), "{e}");
    }

    #[test]
    fn an_upgrade_keeps_the_state_only_with_the_same_layout() {
        let a = plan("CREATE TABLE t AS SELECT userid, COUNT(*) AS n FROM clicks GROUP BY userid")
            .unwrap();
        let b = plan("CREATE TABLE t AS SELECT userid, COUNT(*) AS c FROM clicks GROUP BY userid HAVING COUNT(*) > 2")
            .unwrap();
        let c = plan("CREATE TABLE t AS SELECT userid, SUM(qty) AS n FROM clicks GROUP BY userid")
            .unwrap();
        assert!(a.same_state_layout(&b));
        assert!(!a.same_state_layout(&c));
    }

    #[test]
    fn long_query_ids_give_valid_application_ids() {
        let id = format!("CTAS_{}_12", "X".repeat(80));
        let app = application_id(&id);
        assert!(app.len() <= 60 && app.ends_with("_12"), "{app}");
        assert_eq!(application_id("CTAS_T_3"), "_fjord_sql_CTAS_T_3");
    }

    #[test]
    fn application_ids_of_any_query_id_fit_without_panicking() {
        assert_eq!(application_id("CTAS_T_1"), "_fjord_sql_CTAS_T_1");
        for qid in [
            format!("CTAS_{}_7", "X".repeat(80)),
            format!("CTAS_T_{}", "9".repeat(80)),
            format!("CTAS_{}", "é".repeat(40)),
            "é".repeat(70),
            "_".repeat(90),
            "\u{1F600}".repeat(30),
        ] {
            let id = application_id(&qid);
            assert!(id.len() <= 60, "{id}");
        }
        assert!(application_id(&format!("CTAS_{}_7", "X".repeat(80))).ends_with("_7"));
    }

    #[test]
    fn collect_list_and_set_keep_at_most_ksqldbs_limit() {
        for func in [AggFunc::CollectList, AggFunc::CollectSet] {
            let a = AggCall {
                func,
                args: Vec::new(),
                out_ty: None,
            };
            let mut acc = json!([]);
            for i in 0..COLLECT_LIMIT + 50 {
                fold(&a, &mut acc, &json!(i), false);
            }
            let other = json!([-1, -2]);
            merge_acc(&a, &mut acc, &other);
            let kept = acc.as_array().unwrap();
            assert_eq!(kept.len(), COLLECT_LIMIT, "{func:?}");
            assert_eq!(kept[0], json!(0));
            assert_eq!(kept[COLLECT_LIMIT - 1], json!(COLLECT_LIMIT - 1));
        }
    }
}
