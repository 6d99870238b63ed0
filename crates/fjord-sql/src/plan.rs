//! Semantic analysis of SELECT: the source(s) are looked up in the catalog, every expression is type-checked in
//! their scope, and the query gets a shape: stateless (filter and projection, run here), or an aggregation or
//! a join (checked and planned, to run on the streams library).

use crate::catalog::{Catalog, Column, SourceDef};
use crate::error::{Result, SqlError};
use crate::expr::{compile, Expr, Scope, ScopeCol};
use crate::parser::{
    Emit, JoinKind, Millis, Select, SelectItem, SourceKind, Statement, WindowSpec,
};
use crate::types::SqlType;

/// Rows start with the pseudo-columns ROWTIME, ROWPARTITION and ROWOFFSET, then the source's columns in order.
pub const PSEUDO: &[(&str, SqlType)] = &[
    ("ROWTIME", SqlType::Bigint),
    ("ROWPARTITION", SqlType::Int),
    ("ROWOFFSET", SqlType::Bigint),
];

/// The message a query gets that needs the streams library (aggregations, windows, joins, tables).
pub const NEEDS_STREAMS: &str = "windowed aggregation runs on the streams library, coming next";

#[derive(Clone, Debug, PartialEq)]
pub struct Projection {
    pub name: String,
    pub expr: Expr,
    pub ty: SqlType,
    /// A plain reference to the source's key column: it stays the record key of the output.
    pub is_key: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Shape {
    /// Filter and projection, record by record.
    Stateless,
    Aggregate {
        window: Option<WindowSpec>,
        group_by: Vec<Expr>,
        having: Option<Expr>,
    },
    Join {
        kinds: Vec<JoinKind>,
        on: Vec<Expr>,
        /// Per join: `WITHIN` (before, after) and `GRACE PERIOD`, in milliseconds.
        within: Vec<Option<(Millis, Millis)>>,
        grace: Vec<Option<Millis>>,
        /// Per join: the two sides of an `ON a = b` condition, typed (`None`: not an equality).
        equi: Vec<Option<[(Expr, SqlType); 2]>>,
    },
}

#[derive(Clone, Debug)]
pub struct SelectPlan {
    pub source: SourceDef,
    /// Other sources, for joins.
    pub joined: Vec<SourceDef>,
    pub projection: Vec<Projection>,
    pub filter: Option<Expr>,
    pub shape: Shape,
    pub emit: Option<Emit>,
    pub limit: Option<u64>,
    /// `PARTITION BY`: the result is keyed by this expression (its column in `projection` is the key).
    pub partition_by: Vec<Expr>,
}

impl SelectPlan {
    /// The columns of a stream written by this query.
    pub fn output_columns(&self) -> Vec<Column> {
        self.projection
            .iter()
            .map(|p| Column {
                name: p.name.clone(),
                ty: p.ty.clone(),
                key: p.is_key,
            })
            .collect()
    }

    /// A stateless persistent query keeps its source's key: with several key columns, it must select all of them
    /// or none (the record's key then stays as it is), as ksqlDB requires every key column in the projection
    /// ("Key missing from projection"). Push queries select what they like.
    pub fn require_whole_key(&self) -> Result<()> {
        let keys: Vec<(usize, &Column)> = self
            .source
            .columns
            .iter()
            .enumerate()
            .filter(|(_, c)| c.key)
            .collect();
        if keys.len() < 2 || !self.partition_by.is_empty() {
            return Ok(());
        }
        let selected = |i: usize| {
            self.projection
                .iter()
                .any(|p| p.is_key && p.expr == Expr::Col(i + PSEUDO.len()))
        };
        let missing: Vec<&str> = keys
            .iter()
            .filter(|(i, _)| !selected(*i))
            .map(|(_, c)| c.name.as_str())
            .collect();
        if missing.is_empty() || missing.len() == keys.len() {
            return Ok(());
        }
        Err(SqlError::semantic(format!(
            "Key missing from projection: the key of {} is several columns, and {} of them is not selected: select every key column (or none)",
            self.source.name,
            missing.join(", ")
        )))
    }

    /// Refuses a push query (`EMIT CHANGES`) this version cannot run, with the reason: a filter and projection of
    /// a stream, or of a table's changes, run; aggregations, joins and re-keying a table do not.
    pub fn require_push(&self) -> Result<()> {
        if self.source.kind != SourceKind::Table {
            return self.require_stateless();
        }
        match &self.shape {
            Shape::Stateless if self.partition_by.is_empty() => Ok(()),
            Shape::Stateless => Err(SqlError::not_supported(format!(
                "PARTITION BY on a TABLE ({}): a table's rows stay keyed by its PRIMARY KEY; re-key the stream it is built from instead",
                self.source.name
            ))),
            Shape::Aggregate { .. } => Err(SqlError::not_supported(format!(
                "aggregating a TABLE ({}) is not supported: aggregate the stream its rows come from (GROUP BY on a STREAM)",
                self.source.name
            ))),
            Shape::Join { .. } => self.require_stateless(),
        }
    }

    /// Refuses what this version cannot execute yet, with the reason.
    pub fn require_stateless(&self) -> Result<()> {
        match &self.shape {
            Shape::Stateless if self.source.kind == SourceKind::Stream => Ok(()),
            Shape::Stateless => Err(SqlError::not_supported(format!(
                "persistent queries over a TABLE ({}) are not supported yet; a push query (SELECT ... FROM {} EMIT CHANGES) shows its changes",
                self.source.name, self.source.name
            ))),
            Shape::Aggregate { window: Some(_), .. } => Err(SqlError::not_supported(NEEDS_STREAMS)),
            Shape::Aggregate { window: None, .. } => Err(SqlError::not_supported(
                "aggregation (GROUP BY) runs on the streams library, coming next",
            )),
            Shape::Join { .. } => Err(SqlError::not_supported(
                "joins run on the streams library in persistent queries only: write the result to a stream with CREATE STREAM ... AS SELECT ... JOIN ... and query that stream",
            )),
        }
    }
}

/// The scope of one source: pseudo-columns, then its columns, starting at row index `base`.
pub fn source_scope(def: &SourceDef, qualifier: &str, base: usize) -> Vec<ScopeCol> {
    PSEUDO
        .iter()
        .map(|(n, t)| (n.to_string(), t.clone()))
        .chain(def.columns.iter().map(|c| (c.name.clone(), c.ty.clone())))
        .enumerate()
        .map(|(i, (name, ty))| ScopeCol {
            qualifier: qualifier.to_string(),
            name,
            ty,
            index: base + i,
        })
        .collect()
}

pub fn plan_select(sel: &Select, catalog: &Catalog) -> Result<SelectPlan> {
    let source = catalog
        .lookup(&sel.from.name.value, sel.from.name.pos)?
        .clone();
    let q = sel
        .from
        .alias
        .as_ref()
        .map_or(source.name.clone(), |a| a.value.clone());
    let mut cols = source_scope(&source, &q, 0);
    let mut joined = Vec::new();
    for j in &sel.joins {
        let other = catalog
            .lookup(&j.source.name.value, j.source.name.pos)?
            .clone();
        let oq = j
            .source
            .alias
            .as_ref()
            .map_or(other.name.clone(), |a| a.value.clone());
        if oq == q || joined.iter().any(|(_, n): &(SourceDef, String)| *n == oq) {
            return Err(SqlError::semantic_at(
                format!("{oq} appears twice in FROM: give each source a different alias"),
                j.source.name.pos,
            ));
        }
        let base = cols.len();
        cols.extend(source_scope(&other, &oq, base));
        joined.push((other, oq));
    }
    let windowed = sel.window.is_some();
    // Row index of WINDOWSTART (WINDOWEND follows) in a windowed aggregation.
    let window_base = cols.len();
    // The bounds a windowed table's `*` adds (name, row index): the ones its columns do not have already.
    let mut window_cols: Option<Vec<(&str, usize)>> = None;
    // A windowed table's rows carry their window's bounds (pull queries: `WHERE WINDOWSTART >= ...`).
    if windowed || (joined.is_empty() && windowed_table(&source)) {
        let base = cols.len();
        for (i, n) in ["WINDOWSTART", "WINDOWEND"].iter().enumerate() {
            if !windowed && source.columns.iter().any(|c| c.name == *n) {
                continue;
            }
            if !windowed {
                window_cols
                    .get_or_insert_with(Vec::new)
                    .push((*n, base + i));
            }
            cols.push(ScopeCol {
                qualifier: q.clone(),
                name: n.to_string(),
                ty: SqlType::Bigint,
                index: base + i,
            });
        }
    }
    let plain = Scope {
        cols: cols.clone(),
        allow_agg: false,
    };
    let agg_scope = Scope {
        cols,
        allow_agg: true,
    };
    let mut on = Vec::new();
    let mut equi = Vec::new();
    for j in &sel.joins {
        let mut cond = &j.on;
        while let sqlparser::ast::Expr::Nested(inner) = cond {
            cond = inner;
        }
        equi.push(match cond {
            sqlparser::ast::Expr::BinaryOp {
                left,
                op: sqlparser::ast::BinaryOperator::Eq,
                right,
            } => Some([compile(left, &plain)?, compile(right, &plain)?]),
            _ => None,
        });
        let (e, t) = compile(&j.on, &plain)?;
        if t != SqlType::Boolean {
            return Err(SqlError::semantic(format!(
                "type mismatch: ON `{}` is {t}, expected a BOOLEAN condition",
                j.on
            )));
        }
        if j.within.is_none()
            && source.kind == SourceKind::Stream
            && joined.iter().all(|(s, _)| s.kind == SourceKind::Stream)
        {
            return Err(SqlError::semantic(
                "a stream-stream join needs a WITHIN clause (e.g. WITHIN 1 HOUR)",
            ));
        }
        on.push(e);
    }
    let filter = match &sel.filter {
        Some(w) => {
            let (e, t) = compile(w, &plain)?;
            if t != SqlType::Boolean {
                return Err(SqlError::semantic(format!(
                    "type mismatch: WHERE `{w}` is {t}, expected a BOOLEAN condition"
                )));
            }
            Some(e)
        }
        None => None,
    };
    let mut group_by = Vec::new();
    for g in &sel.group_by {
        group_by.push(compile(g, &plain)?.0);
    }
    let mut partition_by = Vec::new();
    for g in &sel.partition_by {
        partition_by.push(compile(g, &plain)?.0);
    }
    let mut projection: Vec<Projection> = Vec::new();
    let mut generated = 0;
    let key_idx: Vec<usize> = source
        .columns
        .iter()
        .enumerate()
        .filter(|(_, c)| c.key)
        .map(|(i, _)| i + PSEUDO.len())
        .collect();
    for item in &sel.items {
        match item {
            SelectItem::Wildcard | SelectItem::QualifiedWildcard(_) => {
                let targets: Vec<(&SourceDef, usize)> = match item {
                    SelectItem::QualifiedWildcard(n) => {
                        if *n.value == q {
                            vec![(&source, 0)]
                        } else {
                            let mut base = PSEUDO.len() + source.columns.len();
                            let mut found = None;
                            for (s, a) in &joined {
                                if *a == n.value {
                                    found = Some((s, base));
                                }
                                base += PSEUDO.len() + s.columns.len();
                            }
                            vec![found.ok_or_else(|| {
                                SqlError::semantic_at(
                                    format!("unknown source {} in {}.*", n.value, n.value),
                                    n.pos,
                                )
                            })?]
                        }
                    }
                    _ => {
                        let mut v = vec![(&source, 0)];
                        let mut base = PSEUDO.len() + source.columns.len();
                        for (s, _) in &joined {
                            v.push((s, base));
                            base += PSEUDO.len() + s.columns.len();
                        }
                        v
                    }
                };
                for (s, base) in targets {
                    for (i, c) in s.columns.iter().enumerate() {
                        let idx = base + PSEUDO.len() + i;
                        projection.push(Projection {
                            name: c.name.clone(),
                            expr: Expr::Col(idx),
                            ty: c.ty.clone(),
                            is_key: c.key && base == 0,
                        });
                    }
                    // A windowed table's `*` carries its window's bounds after the key, as ksqlDB's does.
                    if base == 0 && window_cols.is_some() {
                        let at = projection.len() - s.columns.len()
                            + s.columns.iter().rposition(|c| c.key).map_or(0, |i| i + 1);
                        for (j, (name, idx)) in window_cols.iter().flatten().enumerate() {
                            projection.insert(
                                at + j,
                                Projection {
                                    name: name.to_string(),
                                    expr: Expr::Col(*idx),
                                    ty: SqlType::Bigint,
                                    is_key: false,
                                },
                            );
                        }
                    }
                }
            }
            SelectItem::Expr { expr, alias } => {
                let (e, t) = compile(expr, &agg_scope)?;
                let name = match (alias, &**expr) {
                    (Some(a), _) => a.value.clone(),
                    (None, sqlparser::ast::Expr::Identifier(i)) => crate::expr::norm(i),
                    (None, sqlparser::ast::Expr::CompoundIdentifier(parts)) => {
                        crate::expr::norm(parts.last().expect("a compound name has parts"))
                    }
                    _ => {
                        let n = format!("KSQL_COL_{generated}");
                        generated += 1;
                        n
                    }
                };
                // A key column selected again (`SELECT k, k AS k2`) is a value column the second time, as in
                // ksqlDB: only the first copy is the key.
                let is_key = matches!(e, Expr::Col(i) if key_idx.contains(&i))
                    && !projection.iter().any(|o| o.is_key && o.expr == e);
                projection.push(Projection {
                    name,
                    expr: e,
                    ty: t,
                    is_key,
                });
            }
        }
    }
    for (i, p) in projection.iter().enumerate() {
        if projection[..i].iter().any(|o| o.name == p.name) {
            return Err(SqlError::semantic(format!(
                "the column name {} appears twice in the result: give one an alias (AS ...)",
                p.name
            )));
        }
    }
    let aggregating = !group_by.is_empty() || projection.iter().any(|p| p.expr.contains_agg());
    let having = match &sel.having {
        Some(h) if !aggregating => {
            return Err(SqlError::semantic(format!("HAVING `{h}` needs GROUP BY")))
        }
        Some(h) => {
            let (e, t) = compile(h, &agg_scope)?;
            if t != SqlType::Boolean {
                return Err(SqlError::semantic(format!(
                    "type mismatch: HAVING `{h}` is {t}, expected a BOOLEAN condition"
                )));
            }
            Some(e)
        }
        None => None,
    };
    if windowed && !aggregating {
        return Err(SqlError::semantic(
            "WINDOW needs an aggregation: add GROUP BY and an aggregate such as COUNT(*)",
        ));
    }
    if sel.emit == Some(Emit::Final) && !windowed {
        return Err(SqlError::semantic(
            "EMIT FINAL needs a windowed aggregation (WINDOW ... GROUP BY)",
        ));
    }
    if aggregating {
        if group_by.is_empty() {
            return Err(SqlError::semantic(
                "aggregate functions need GROUP BY (ksqlDB has no global aggregation)",
            ));
        }
        for p in &projection {
            let windowed_col = matches!(p.name.as_str(), "WINDOWSTART" | "WINDOWEND")
                || (windowed && matches!(p.expr, Expr::Col(i) if i >= window_base));
            if !p.expr.contains_agg() && !group_by.contains(&p.expr) && !windowed_col {
                return Err(SqlError::semantic(format!(
                    "{} is neither in GROUP BY nor an aggregate: group by it or aggregate it (e.g. LATEST_BY_OFFSET)",
                    p.name
                )));
            }
        }
    }
    // PARTITION BY re-keys a stream: the result's key is the expression, which must be in the SELECT list (it
    // becomes the key column; the source's key column, when selected, becomes a value column), as ksqlDB
    // requires ("Key missing from projection"). Aggregations and joins refuse it (they are keyed already).
    // Several expressions make several key columns (ksqlDB 0.15's multi-column keys), one key record.
    if !partition_by.is_empty() && joined.is_empty() && !aggregating {
        let mut keys = Vec::with_capacity(partition_by.len());
        for (given, e) in sel.partition_by.iter().zip(&partition_by) {
            let Some(k) = projection.iter().position(|p| p.expr == *e) else {
                return Err(SqlError::semantic(format!(
                    "PARTITION BY {given}: the partitioning expression must be in the SELECT list, where it becomes \
                     a key column: add it (e.g. SELECT {given}, ...)"
                )));
            };
            if keys.contains(&k) {
                return Err(SqlError::semantic(format!(
                    "PARTITION BY {given} appears twice: name each key expression once"
                )));
            }
            keys.push(k);
        }
        for (i, p) in projection.iter_mut().enumerate() {
            p.is_key = keys.contains(&i);
        }
    }
    let shape = if !joined.is_empty() {
        Shape::Join {
            kinds: sel.joins.iter().map(|j| j.kind).collect(),
            on,
            within: sel.joins.iter().map(|j| j.within).collect(),
            grace: sel.joins.iter().map(|j| j.grace).collect(),
            equi,
        }
    } else if aggregating {
        Shape::Aggregate {
            window: sel.window.clone(),
            group_by,
            having,
        }
    } else {
        Shape::Stateless
    };
    Ok(SelectPlan {
        source,
        joined: joined.into_iter().map(|(s, _)| s).collect(),
        projection,
        filter,
        shape,
        emit: sel.emit,
        limit: sel.limit,
        partition_by,
    })
}

/// Whether `def` is a table written by a windowed aggregation (its rows are per key and window).
pub fn windowed_table(def: &SourceDef) -> bool {
    table_window(def).is_some()
}

/// The window of a table written by a windowed aggregation: its records' keys end with the window's bounds.
pub fn table_window(def: &SourceDef) -> Option<WindowSpec> {
    if def.kind != SourceKind::Table {
        return None;
    }
    match crate::parser::parse_statement(&def.query.as_ref()?.sql).map(|p| p.statement) {
        Ok(Statement::CreateSource {
            as_select: Some(s), ..
        }) => s.window,
        _ => None,
    }
}

/// Whether the query `sql` (a CREATE ... AS SELECT) reads `name`.
pub fn query_reads(sql: &str, name: &str) -> bool {
    match crate::parser::parse_statement(sql).map(|p| p.statement) {
        Ok(Statement::CreateSource {
            as_select: Some(s), ..
        }) => s.from.name.value == name || s.joins.iter().any(|j| j.source.name.value == name),
        _ => false,
    }
}
