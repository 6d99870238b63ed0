//! Typed expressions: sqlparser's AST is checked against a scope of columns (unknown columns, ambiguous names,
//! type mismatches are errors naming what exists or what was expected) and compiled to [`Expr`], which
//! [`Expr::eval`] evaluates against a row. Aggregate calls are type-checked and kept as [`Expr::Agg`]; they are
//! never evaluated here (they run on the streams library).

use sqlparser::ast::{
    BinaryOperator, CastKind, CeilFloorKind, DataType, Expr as Ast, FunctionArg, FunctionArgExpr,
    FunctionArguments, Ident, InTarget, UnaryOperator, Value as AstValue,
};

use crate::error::{Pos, Result, SqlError};
use crate::functions::{self, Func};
use crate::types::{SqlType, Value};

/// One column visible to expressions.
#[derive(Clone, Debug)]
pub struct ScopeCol {
    /// The source's name or alias (`o` in `orders o`).
    pub qualifier: String,
    pub name: String,
    pub ty: SqlType,
    /// Its index in the row.
    pub index: usize,
}

#[derive(Clone, Debug, Default)]
pub struct Scope {
    pub cols: Vec<ScopeCol>,
    /// Aggregate calls are allowed here (the projection and HAVING of a GROUP BY query).
    pub allow_agg: bool,
}

impl Scope {
    fn resolve(&self, qualifier: Option<&Ident>, name: &Ident) -> Result<&ScopeCol> {
        let n = norm(name);
        let pos = ident_pos(name);
        let q = qualifier.map(norm);
        let matches: Vec<&ScopeCol> = self
            .cols
            .iter()
            .filter(|c| c.name == n && q.as_ref().is_none_or(|q| *q == c.qualifier))
            .collect();
        match matches.len() {
            1 => Ok(matches[0]),
            0 => {
                let mut known: Vec<String> = self
                    .cols
                    .iter()
                    .map(|c| {
                        if q.is_some() {
                            format!("{}.{}", c.qualifier, c.name)
                        } else {
                            c.name.clone()
                        }
                    })
                    .collect();
                known.dedup();
                let shown = match &q {
                    Some(q) => format!("{q}.{n}"),
                    None => n.clone(),
                };
                Err(SqlError::semantic_at(
                    format!(
                        "unknown column {shown}: the columns are {}",
                        known.join(", ")
                    ),
                    pos,
                ))
            }
            _ => Err(SqlError::semantic_at(
                format!(
                    "column {n} is ambiguous: qualify it ({})",
                    matches
                        .iter()
                        .map(|c| format!("{}.{}", c.qualifier, c.name))
                        .collect::<Vec<_>>()
                        .join(" or ")
                ),
                pos,
            )),
        }
    }
}

/// Unquoted identifiers are upper case, as in the parser.
pub fn norm(i: &Ident) -> String {
    if i.quote_style.is_some() {
        i.value.clone()
    } else {
        i.value.to_ascii_uppercase()
    }
}

fn ident_pos(i: &Ident) -> Option<Pos> {
    Pos::from_location(i.span.start)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Eq,
    NotEq,
    Lt,
    LtEq,
    Gt,
    GtEq,
    And,
    Or,
    Concat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AggFunc {
    Count,
    Sum,
    Avg,
    Min,
    Max,
    CountDistinct,
    LatestByOffset,
    EarliestByOffset,
    CollectList,
    CollectSet,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    Lit(Value),
    Col(usize),
    Neg(Box<Expr>),
    Not(Box<Expr>),
    Bin(BinOp, Box<Expr>, Box<Expr>),
    IsNull(Box<Expr>, bool),
    Case {
        operand: Option<Box<Expr>>,
        whens: Vec<(Expr, Expr)>,
        otherwise: Option<Box<Expr>>,
    },
    Cast(Box<Expr>, SqlType),
    Call(Func, Vec<Expr>),
    InList(Box<Expr>, Vec<Expr>, bool),
    Between(Box<Expr>, Box<Expr>, Box<Expr>, bool),
    Like(Box<Expr>, Box<Expr>, bool),
    Field(Box<Expr>, String),
    Index(Box<Expr>, Box<Expr>),
    /// `COUNT(*)` has no argument.
    Agg(AggFunc, Vec<Expr>),
}

/// Compiles `ast` in `scope`: the expression and its type. NULL literals have type `None` until context says.
pub fn compile(ast: &Ast, scope: &Scope) -> Result<(Expr, SqlType)> {
    let (e, t) = compile_opt(ast, scope)?;
    // A bare NULL has no type of its own; STRING is what ksqlDB gives it.
    Ok((e, t.unwrap_or(SqlType::String)))
}

type Typed = (Expr, Option<SqlType>);

fn ast_pos(ast: &Ast) -> Option<Pos> {
    use sqlparser::ast::Spanned;
    Pos::from_location(ast.span().start)
}

fn mismatch(ast: &Ast, msg: String) -> SqlError {
    SqlError::semantic_at(msg, ast_pos(ast))
}

fn expect_type(
    ast: &Ast,
    got: &Option<SqlType>,
    ok: impl Fn(&SqlType) -> bool,
    want: &str,
) -> Result<()> {
    match got {
        Some(t) if !ok(t) => Err(mismatch(
            ast,
            format!("type mismatch: `{ast}` is {t}, expected {want}"),
        )),
        _ => Ok(()),
    }
}

fn compile_opt(ast: &Ast, scope: &Scope) -> Result<Typed> {
    Ok(match ast {
        Ast::Identifier(i) => {
            let c = scope.resolve(None, i)?;
            (Expr::Col(c.index), Some(c.ty.clone()))
        }
        Ast::CompoundIdentifier(parts) => {
            // `q.col`, or `col.field...` (struct fields, ksqlDB's `->` written with dots), or `q.col.field`.
            let (base, rest) = match parts.len() {
                0 => return Err(mismatch(ast, "empty name".into())),
                1 => (scope.resolve(None, &parts[0])?, &parts[1..]),
                _ => match scope.resolve(Some(&parts[0]), &parts[1]) {
                    Ok(c) => (c, &parts[2..]),
                    Err(e) => match scope.resolve(None, &parts[0]) {
                        Ok(c) if matches!(c.ty, SqlType::Struct(_)) => (c, &parts[1..]),
                        _ => return Err(e),
                    },
                },
            };
            let mut e = Expr::Col(base.index);
            let mut t = base.ty.clone();
            for f in rest {
                let SqlType::Struct(fields) = &t else {
                    return Err(mismatch(
                        ast,
                        format!(
                            "type mismatch: {} is {t}, not a STRUCT with fields",
                            base.name
                        ),
                    ));
                };
                let fname = norm(f);
                let Some((n, ft)) = fields.iter().find(|(n, _)| n.eq_ignore_ascii_case(&fname))
                else {
                    return Err(SqlError::semantic_at(
                        format!(
                            "unknown field {fname}: the fields are {}",
                            fields
                                .iter()
                                .map(|(n, _)| n.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                        ident_pos(f),
                    ));
                };
                e = Expr::Field(Box::new(e), n.clone());
                t = ft.clone();
            }
            (e, Some(t))
        }
        Ast::Value(v) => match &v.value {
            AstValue::Null => (Expr::Lit(Value::Null), None),
            AstValue::Boolean(b) => (Expr::Lit(Value::Bool(*b)), Some(SqlType::Boolean)),
            AstValue::SingleQuotedString(s) | AstValue::DoubleQuotedString(s) => {
                (Expr::Lit(Value::String(s.clone())), Some(SqlType::String))
            }
            AstValue::Number(n, _) => {
                if let Ok(i) = n.parse::<i32>() {
                    (Expr::Lit(Value::Int(i)), Some(SqlType::Int))
                } else if let Ok(i) = n.parse::<i64>() {
                    (Expr::Lit(Value::Bigint(i)), Some(SqlType::Bigint))
                } else if let Ok(d) = n.parse::<f64>() {
                    (Expr::Lit(Value::Double(d)), Some(SqlType::Double))
                } else {
                    return Err(mismatch(ast, format!("`{n}` is not a number")));
                }
            }
            other => return Err(mismatch(ast, format!("literal `{other}` is not supported"))),
        },
        Ast::Nested(e) => compile_opt(e, scope)?,
        Ast::UnaryOp { op, expr } => {
            let (e, t) = compile_opt(expr, scope)?;
            match op {
                UnaryOperator::Not => {
                    expect_type(expr, &t, |t| *t == SqlType::Boolean, "BOOLEAN")?;
                    (Expr::Not(Box::new(e)), Some(SqlType::Boolean))
                }
                UnaryOperator::Minus => {
                    expect_type(expr, &t, SqlType::is_numeric, "a number")?;
                    (Expr::Neg(Box::new(e)), t)
                }
                UnaryOperator::Plus => {
                    expect_type(expr, &t, SqlType::is_numeric, "a number")?;
                    (e, t)
                }
                other => return Err(mismatch(ast, format!("operator {other} is not supported"))),
            }
        }
        Ast::BinaryOp { left, op, right } => {
            let (l, lt) = compile_opt(left, scope)?;
            let (r, rt) = compile_opt(right, scope)?;
            let bop = match op {
                BinaryOperator::Plus => BinOp::Add,
                BinaryOperator::Minus => BinOp::Sub,
                BinaryOperator::Multiply => BinOp::Mul,
                BinaryOperator::Divide => BinOp::Div,
                BinaryOperator::Modulo => BinOp::Mod,
                BinaryOperator::Eq => BinOp::Eq,
                BinaryOperator::NotEq => BinOp::NotEq,
                BinaryOperator::Lt => BinOp::Lt,
                BinaryOperator::LtEq => BinOp::LtEq,
                BinaryOperator::Gt => BinOp::Gt,
                BinaryOperator::GtEq => BinOp::GtEq,
                BinaryOperator::And => BinOp::And,
                BinaryOperator::Or => BinOp::Or,
                BinaryOperator::StringConcat => BinOp::Concat,
                other => return Err(mismatch(ast, format!("operator {other} is not supported"))),
            };
            let t = match bop {
                BinOp::And | BinOp::Or => {
                    expect_type(left, &lt, |t| *t == SqlType::Boolean, "BOOLEAN")?;
                    expect_type(right, &rt, |t| *t == SqlType::Boolean, "BOOLEAN")?;
                    SqlType::Boolean
                }
                BinOp::Concat => {
                    expect_type(left, &lt, |t| *t == SqlType::String, "STRING")?;
                    expect_type(right, &rt, |t| *t == SqlType::String, "STRING")?;
                    SqlType::String
                }
                BinOp::Add if lt == Some(SqlType::String) || rt == Some(SqlType::String) => {
                    // ksqlDB concatenates strings with `+`.
                    expect_type(left, &lt, |t| *t == SqlType::String, "STRING")?;
                    expect_type(right, &rt, |t| *t == SqlType::String, "STRING")?;
                    return Ok((
                        Expr::Bin(BinOp::Concat, Box::new(l), Box::new(r)),
                        Some(SqlType::String),
                    ));
                }
                BinOp::Add | BinOp::Sub | BinOp::Mul | BinOp::Div | BinOp::Mod => {
                    expect_type(left, &lt, SqlType::is_numeric, "a number")?;
                    expect_type(right, &rt, SqlType::is_numeric, "a number")?;
                    match (&lt, &rt) {
                        (Some(a), Some(b)) => SqlType::widen(a, b).unwrap_or(SqlType::Double),
                        (Some(a), None) | (None, Some(a)) => a.clone(),
                        (None, None) => SqlType::Int,
                    }
                }
                _ => {
                    if let (Some(a), Some(b)) = (&lt, &rt) {
                        if !a.comparable(b) {
                            return Err(mismatch(
                                ast,
                                format!("type mismatch: cannot compare {a} (`{left}`) with {b} (`{right}`)"),
                            ));
                        }
                    }
                    SqlType::Boolean
                }
            };
            (Expr::Bin(bop, Box::new(l), Box::new(r)), Some(t))
        }
        Ast::IsNull(e) => (
            Expr::IsNull(Box::new(compile_opt(e, scope)?.0), false),
            Some(SqlType::Boolean),
        ),
        Ast::IsNotNull(e) => (
            Expr::IsNull(Box::new(compile_opt(e, scope)?.0), true),
            Some(SqlType::Boolean),
        ),
        Ast::IsTrue(e) | Ast::IsFalse(e) => {
            let (x, t) = compile_opt(e, scope)?;
            expect_type(e, &t, |t| *t == SqlType::Boolean, "BOOLEAN")?;
            let want = matches!(ast, Ast::IsTrue(_));
            (
                Expr::Bin(
                    BinOp::Eq,
                    Box::new(x),
                    Box::new(Expr::Lit(Value::Bool(want))),
                ),
                Some(SqlType::Boolean),
            )
        }
        Ast::Between {
            expr,
            negated,
            low,
            high,
        } => {
            let (e, t) = compile_opt(expr, scope)?;
            let (lo, lt) = compile_opt(low, scope)?;
            let (hi, ht) = compile_opt(high, scope)?;
            for (side, st) in [(low, &lt), (high, &ht)] {
                if let (Some(a), Some(b)) = (&t, st) {
                    if !a.comparable(b) {
                        return Err(mismatch(
                            side,
                            format!("type mismatch: cannot compare {a} with {b} (`{side}`)"),
                        ));
                    }
                }
            }
            (
                Expr::Between(Box::new(e), Box::new(lo), Box::new(hi), *negated),
                Some(SqlType::Boolean),
            )
        }
        Ast::In {
            expr,
            target: InTarget::List(list),
            negated,
            ..
        } => {
            let (e, t) = compile_opt(expr, scope)?;
            let mut items = Vec::new();
            for item in list {
                let (x, xt) = compile_opt(item, scope)?;
                if let (Some(a), Some(b)) = (&t, &xt) {
                    if !a.comparable(b) {
                        return Err(mismatch(
                            item,
                            format!("type mismatch: cannot compare {a} with {b} (`{item}`)"),
                        ));
                    }
                }
                items.push(x);
            }
            (
                Expr::InList(Box::new(e), items, *negated),
                Some(SqlType::Boolean),
            )
        }
        Ast::Like {
            negated,
            expr,
            pattern,
            escape_char: None,
            any: false,
        } => {
            let (e, t) = compile_opt(expr, scope)?;
            let (p, pt) = compile_opt(pattern, scope)?;
            expect_type(expr, &t, |t| *t == SqlType::String, "STRING")?;
            expect_type(pattern, &pt, |t| *t == SqlType::String, "STRING")?;
            (
                Expr::Like(Box::new(e), Box::new(p), *negated),
                Some(SqlType::Boolean),
            )
        }
        Ast::Case {
            operand,
            conditions,
            else_result,
            ..
        } => {
            let op = match operand {
                Some(o) => Some(compile_opt(o, scope)?),
                None => None,
            };
            let mut whens = Vec::new();
            let mut result_t: Option<SqlType> = None;
            for w in conditions {
                let (c, ct) = compile_opt(&w.condition, scope)?;
                match &op {
                    Some((_, Some(ot))) => {
                        if let Some(ct) = &ct {
                            if !ot.comparable(ct) {
                                return Err(mismatch(
                                    &w.condition,
                                    format!(
                                        "type mismatch: CASE operand is {ot}, WHEN `{}` is {ct}",
                                        w.condition
                                    ),
                                ));
                            }
                        }
                    }
                    Some((_, None)) => {}
                    None => expect_type(
                        &w.condition,
                        &ct,
                        |t| *t == SqlType::Boolean,
                        "BOOLEAN (a condition)",
                    )?,
                }
                let (r, rt) = compile_opt(&w.result, scope)?;
                result_t = unify(&w.result, result_t, rt)?;
                whens.push((c, r));
            }
            let otherwise = match else_result {
                Some(e) => {
                    let (x, xt) = compile_opt(e, scope)?;
                    result_t = unify(e, result_t, xt)?;
                    Some(Box::new(x))
                }
                None => None,
            };
            (
                Expr::Case {
                    operand: op.map(|(e, _)| Box::new(e)),
                    whens,
                    otherwise,
                },
                result_t,
            )
        }
        Ast::Cast {
            kind: CastKind::Cast | CastKind::DoubleColon,
            expr,
            data_type,
            format: None,
        } => {
            let (e, _) = compile_opt(expr, scope)?;
            let t = map_data_type(data_type).ok_or_else(|| {
                mismatch(ast, format!("CAST to {data_type} is not supported: cast to BOOLEAN, INT, BIGINT, DOUBLE, DECIMAL, STRING, TIMESTAMP, DATE or TIME"))
            })?;
            (Expr::Cast(Box::new(e), t.clone()), Some(t))
        }
        Ast::Substring {
            expr,
            substring_from,
            substring_for,
            ..
        } => {
            let mut args = vec![(**expr).clone()];
            args.extend(substring_from.iter().map(|e| (**e).clone()));
            args.extend(substring_for.iter().map(|e| (**e).clone()));
            call(ast, "SUBSTRING", &args, scope)?
        }
        Ast::Trim {
            expr,
            trim_where: None,
            trim_what: None,
            trim_characters: None,
        } => call(ast, "TRIM", std::slice::from_ref(expr), scope)?,
        Ast::Ceil {
            expr,
            field: CeilFloorKind::DateTimeField(sqlparser::ast::DateTimeField::NoDateTime),
        } => call(ast, "CEIL", std::slice::from_ref(expr), scope)?,
        Ast::Floor {
            expr,
            field: CeilFloorKind::DateTimeField(sqlparser::ast::DateTimeField::NoDateTime),
        } => call(ast, "FLOOR", std::slice::from_ref(expr), scope)?,
        Ast::Function(f) => {
            let name = f.name.to_string().to_ascii_uppercase();
            let FunctionArguments::List(list) = &f.args else {
                if matches!(f.args, FunctionArguments::None) {
                    return call(ast, &name, &[], scope);
                }
                return Err(mismatch(
                    ast,
                    format!("{name}: subqueries are not supported"),
                ));
            };
            if list.duplicate_treatment.is_some()
                || !list.clauses.is_empty()
                || f.filter.is_some()
                || f.over.is_some()
            {
                return Err(mismatch(ast, format!("{name}: DISTINCT, ORDER BY, FILTER and OVER are not supported in function calls")));
            }
            let mut args = Vec::new();
            let mut star = false;
            for a in &list.args {
                match a {
                    FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => args.push(e.clone()),
                    FunctionArg::Unnamed(FunctionArgExpr::Wildcard) if name == "COUNT" => {
                        star = true
                    }
                    _ => {
                        return Err(mismatch(
                            ast,
                            format!("{name}: only plain arguments are supported"),
                        ))
                    }
                }
            }
            if star {
                return agg(ast, AggFunc::Count, &[], scope);
            }
            call(ast, &name, &args, scope)?
        }
        Ast::Array(a) => {
            let mut items = Vec::new();
            let mut t = None;
            for e in &a.elem {
                let (x, xt) = compile_opt(e, scope)?;
                t = unify(e, t, xt)?;
                items.push(x);
            }
            (
                Expr::Call(Func::ArrayOf, items),
                Some(SqlType::Array(Box::new(t.unwrap_or(SqlType::String)))),
            )
        }
        Ast::CompoundFieldAccess { root, access_chain } if access_chain.len() == 1 => {
            let (base, bt) = compile_opt(root, scope)?;
            match &access_chain[0] {
                sqlparser::ast::AccessExpr::Subscript(sqlparser::ast::Subscript::Index {
                    index,
                }) => {
                    let (i, it) = compile_opt(index, scope)?;
                    let t = match bt {
                        Some(SqlType::Array(el)) => {
                            expect_type(index, &it, |t| matches!(t, SqlType::Int | SqlType::Bigint), "INT (arrays index from 1)")?;
                            *el
                        }
                        Some(SqlType::Map(_, v)) => *v,
                        Some(other) => return Err(mismatch(ast, format!("type mismatch: `{root}` is {other}, only an ARRAY or MAP can be indexed"))),
                        None => SqlType::String,
                    };
                    (Expr::Index(Box::new(base), Box::new(i)), Some(t))
                }
                _ => return Err(mismatch(ast, format!("`{ast}` is not supported"))),
            }
        }
        other => {
            return Err(mismatch(
                ast,
                format!("`{other}` is not supported in Fjord SQL expressions"),
            ))
        }
    })
}

fn unify(at: &Ast, a: Option<SqlType>, b: Option<SqlType>) -> Result<Option<SqlType>> {
    Ok(match (a, b) {
        (None, x) | (x, None) => x,
        (Some(a), Some(b)) if a == b => Some(a),
        (Some(a), Some(b)) => match SqlType::widen(&a, &b) {
            Some(w) => Some(w),
            None => {
                return Err(mismatch(
                    at,
                    format!("type mismatch: `{at}` is {b}, the other branches are {a}"),
                ))
            }
        },
    })
}

pub fn map_data_type(d: &DataType) -> Option<SqlType> {
    Some(match d {
        DataType::Boolean | DataType::Bool => SqlType::Boolean,
        DataType::Int(_) | DataType::Integer(_) => SqlType::Int,
        DataType::BigInt(_) => SqlType::Bigint,
        DataType::Double(_) | DataType::DoublePrecision | DataType::Float(_) | DataType::Real => {
            SqlType::Double
        }
        DataType::Decimal(info) | DataType::Numeric(info) => match info {
            sqlparser::ast::ExactNumberInfo::PrecisionAndScale(p, s) => SqlType::Decimal(
                u8::try_from(*p).ok().filter(|p| (1..=38).contains(p))?,
                u8::try_from(*s).ok()?,
            ),
            _ => return None,
        },
        DataType::String(_)
        | DataType::Varchar(_)
        | DataType::Text
        | DataType::CharacterVarying(_) => SqlType::String,
        DataType::Bytes(_) => SqlType::Bytes,
        DataType::Timestamp(..) => SqlType::Timestamp,
        DataType::Date => SqlType::Date,
        DataType::Time(..) => SqlType::Time,
        DataType::Custom(name, _) => match name.to_string().to_ascii_uppercase().as_str() {
            "STRING" => SqlType::String,
            "BYTES" => SqlType::Bytes,
            _ => return None,
        },
        _ => return None,
    })
}

fn agg(ast: &Ast, f: AggFunc, args: &[Ast], scope: &Scope) -> Result<Typed> {
    if !scope.allow_agg {
        return Err(mismatch(
            ast,
            format!("aggregate function `{ast}` is only allowed in the SELECT list or HAVING of a GROUP BY query"),
        ));
    }
    let inner = Scope {
        allow_agg: false,
        ..scope.clone()
    };
    let mut compiled = Vec::new();
    let mut types = Vec::new();
    for a in args {
        let (e, t) = compile_opt(a, &inner).map_err(|e| {
            if e.message.starts_with("aggregate function") {
                SqlError::semantic_at("aggregate functions cannot be nested", e.pos)
            } else {
                e
            }
        })?;
        compiled.push(e);
        types.push(t.unwrap_or(SqlType::String));
    }
    let want = |n: usize| -> Result<()> {
        if args.len() == n {
            Ok(())
        } else {
            Err(mismatch(
                ast,
                format!("`{ast}`: expected {n} argument(s), found {}", args.len()),
            ))
        }
    };
    let t = match f {
        AggFunc::Count => {
            if args.len() > 1 {
                want(1)?;
            }
            SqlType::Bigint
        }
        AggFunc::CountDistinct => {
            want(1)?;
            SqlType::Bigint
        }
        AggFunc::Sum | AggFunc::Avg => {
            want(1)?;
            if !types[0].is_numeric() {
                return Err(mismatch(
                    ast,
                    format!(
                        "type mismatch: `{ast}` needs a number, `{}` is {}",
                        args[0], types[0]
                    ),
                ));
            }
            if f == AggFunc::Avg {
                SqlType::Double
            } else {
                types[0].clone()
            }
        }
        AggFunc::Min | AggFunc::Max => {
            want(1)?;
            if !(types[0].is_numeric()
                || matches!(
                    types[0],
                    SqlType::String | SqlType::Timestamp | SqlType::Date | SqlType::Time
                ))
            {
                return Err(mismatch(
                    ast,
                    format!(
                        "type mismatch: `{ast}` needs a number, string or time, `{}` is {}",
                        args[0], types[0]
                    ),
                ));
            }
            types[0].clone()
        }
        AggFunc::LatestByOffset | AggFunc::EarliestByOffset => {
            want(1)?;
            types[0].clone()
        }
        AggFunc::CollectList | AggFunc::CollectSet => {
            want(1)?;
            SqlType::Array(Box::new(types[0].clone()))
        }
    };
    Ok((Expr::Agg(f, compiled), Some(t)))
}

fn call(ast: &Ast, name: &str, args: &[Ast], scope: &Scope) -> Result<Typed> {
    let aggf = match name {
        "COUNT" => Some(AggFunc::Count),
        "SUM" => Some(AggFunc::Sum),
        "AVG" => Some(AggFunc::Avg),
        "MIN" => Some(AggFunc::Min),
        "MAX" => Some(AggFunc::Max),
        "COUNT_DISTINCT" => Some(AggFunc::CountDistinct),
        "LATEST_BY_OFFSET" => Some(AggFunc::LatestByOffset),
        "EARLIEST_BY_OFFSET" => Some(AggFunc::EarliestByOffset),
        "COLLECT_LIST" => Some(AggFunc::CollectList),
        "COLLECT_SET" => Some(AggFunc::CollectSet),
        _ => None,
    };
    if let Some(f) = aggf {
        return agg(ast, f, args, scope);
    }
    let mut compiled = Vec::new();
    let mut types = Vec::new();
    for a in args {
        let (e, t) = compile_opt(a, scope)?;
        compiled.push(e);
        types.push(t);
    }
    let (func, t) =
        functions::check(name, &types).map_err(|msg| mismatch(ast, format!("`{ast}`: {msg}")))?;
    Ok((Expr::Call(func, compiled), Some(t)))
}

impl Expr {
    pub fn contains_agg(&self) -> bool {
        match self {
            Expr::Agg(..) => true,
            Expr::Lit(_) | Expr::Col(_) => false,
            Expr::Neg(e)
            | Expr::Not(e)
            | Expr::IsNull(e, _)
            | Expr::Cast(e, _)
            | Expr::Field(e, _) => e.contains_agg(),
            Expr::Bin(_, a, b) | Expr::Like(a, b, _) | Expr::Index(a, b) => {
                a.contains_agg() || b.contains_agg()
            }
            Expr::Between(a, b, c, _) => a.contains_agg() || b.contains_agg() || c.contains_agg(),
            Expr::Case {
                operand,
                whens,
                otherwise,
            } => {
                operand.as_ref().is_some_and(|e| e.contains_agg())
                    || whens
                        .iter()
                        .any(|(a, b)| a.contains_agg() || b.contains_agg())
                    || otherwise.as_ref().is_some_and(|e| e.contains_agg())
            }
            Expr::Call(_, args) => args.iter().any(Expr::contains_agg),
            Expr::InList(e, l, _) => e.contains_agg() || l.iter().any(Expr::contains_agg),
        }
    }

    /// Evaluates against `row`. An error (an overflow, a bad cast) is the caller's to report; ksqlDB writes
    /// such rows to its processing log and goes on.
    pub fn eval(&self, row: &[Value]) -> Result<Value, String> {
        Ok(match self {
            Expr::Lit(v) => v.clone(),
            Expr::Col(i) => row.get(*i).cloned().unwrap_or(Value::Null),
            Expr::Neg(e) => match e.eval(row)? {
                Value::Null => Value::Null,
                Value::Int(i) => Value::Int(i.checked_neg().ok_or("integer overflow")?),
                Value::Bigint(i) => Value::Bigint(i.checked_neg().ok_or("integer overflow")?),
                Value::Double(d) => Value::Double(-d),
                other => return Err(format!("cannot negate {other:?}")),
            },
            Expr::Not(e) => match e.eval(row)? {
                Value::Bool(b) => Value::Bool(!b),
                _ => Value::Null,
            },
            Expr::Bin(op, a, b) => binary(*op, a, b, row)?,
            Expr::IsNull(e, negated) => Value::Bool(e.eval(row)?.is_null() != *negated),
            Expr::Case {
                operand,
                whens,
                otherwise,
            } => {
                let op = match operand {
                    Some(o) => Some(o.eval(row)?),
                    None => None,
                };
                for (c, r) in whens {
                    let hit = match &op {
                        Some(v) => compare(v, &c.eval(row)?) == Some(std::cmp::Ordering::Equal),
                        None => c.eval(row)? == Value::Bool(true),
                    };
                    if hit {
                        return r.eval(row);
                    }
                }
                match otherwise {
                    Some(e) => e.eval(row)?,
                    None => Value::Null,
                }
            }
            Expr::Cast(e, t) => functions::cast(e.eval(row)?, t)?,
            Expr::Call(f, args) => {
                let vals = args
                    .iter()
                    .map(|a| a.eval(row))
                    .collect::<Result<Vec<_>, _>>()?;
                functions::call(*f, vals)?
            }
            Expr::InList(e, list, negated) => {
                let v = e.eval(row)?;
                if v.is_null() {
                    return Ok(Value::Null);
                }
                let mut found = false;
                for item in list {
                    if compare(&v, &item.eval(row)?) == Some(std::cmp::Ordering::Equal) {
                        found = true;
                        break;
                    }
                }
                Value::Bool(found != *negated)
            }
            Expr::Between(e, lo, hi, negated) => {
                let v = e.eval(row)?;
                let (l, h) = (lo.eval(row)?, hi.eval(row)?);
                match (compare(&v, &l), compare(&v, &h)) {
                    (Some(a), Some(b)) => Value::Bool((a.is_ge() && b.is_le()) != *negated),
                    _ => Value::Null,
                }
            }
            Expr::Like(e, p, negated) => match (e.eval(row)?, p.eval(row)?) {
                (Value::String(s), Value::String(p)) => Value::Bool(like(&s, &p) != *negated),
                _ => Value::Null,
            },
            Expr::Field(e, name) => match e.eval(row)? {
                Value::Struct(fields) => fields
                    .into_iter()
                    .find(|(n, _)| **n == **name)
                    .map_or(Value::Null, |(_, v)| v),
                _ => Value::Null,
            },
            Expr::Index(e, i) => match (e.eval(row)?, i.eval(row)?) {
                (Value::Array(a), idx) => {
                    // 1-based; negative indexes count from the end, as in ksqlDB.
                    let n = a.len() as i64;
                    match idx.as_i64() {
                        Some(i) if i >= 1 && i <= n => a[(i - 1) as usize].clone(),
                        // `i >= -n`, not `-i <= n`: negating i64::MIN (from record data) overflows.
                        Some(i) if i < 0 && i >= -n => a[(n + i) as usize].clone(),
                        _ => Value::Null,
                    }
                }
                (Value::Map(m), k) => m
                    .into_iter()
                    .find(|(mk, _)| compare(mk, &k) == Some(std::cmp::Ordering::Equal))
                    .map_or(Value::Null, |(_, v)| v),
                _ => Value::Null,
            },
            Expr::Agg(..) => {
                return Err(
                    "aggregate functions are evaluated by the streams library, not per row".into(),
                )
            }
        })
    }
}

fn binary(op: BinOp, a: &Expr, b: &Expr, row: &[Value]) -> Result<Value, String> {
    use std::cmp::Ordering::*;
    // AND and OR follow three-valued logic and short-circuit.
    if op == BinOp::And || op == BinOp::Or {
        let l = a.eval(row)?;
        let stop = Value::Bool(op == BinOp::Or);
        if l == stop {
            return Ok(stop);
        }
        let r = b.eval(row)?;
        if r == stop {
            return Ok(stop);
        }
        return Ok(if l.is_null() || r.is_null() {
            Value::Null
        } else {
            Value::Bool(op == BinOp::And)
        });
    }
    let l = a.eval(row)?;
    let r = b.eval(row)?;
    if l.is_null() || r.is_null() {
        return Ok(Value::Null);
    }
    Ok(match op {
        BinOp::Concat => Value::String(format!("{}{}", l.to_text(), r.to_text())),
        BinOp::Eq | BinOp::NotEq | BinOp::Lt | BinOp::LtEq | BinOp::Gt | BinOp::GtEq => {
            let Some(o) = compare(&l, &r) else {
                return Ok(Value::Null);
            };
            Value::Bool(match op {
                BinOp::Eq => o == Equal,
                BinOp::NotEq => o != Equal,
                BinOp::Lt => o == Less,
                BinOp::LtEq => o != Greater,
                BinOp::Gt => o == Greater,
                _ => o != Less,
            })
        }
        _ => arith(op, &l, &r)?,
    })
}

fn arith(op: BinOp, l: &Value, r: &Value) -> Result<Value, String> {
    fn int_op(op: BinOp, a: i64, b: i64) -> Result<i64, String> {
        match op {
            BinOp::Add => a.checked_add(b),
            BinOp::Sub => a.checked_sub(b),
            BinOp::Mul => a.checked_mul(b),
            BinOp::Div => {
                if b == 0 {
                    return Err("division by zero".into());
                }
                a.checked_div(b)
            }
            _ => {
                if b == 0 {
                    return Err("division by zero".into());
                }
                a.checked_rem(b)
            }
        }
        .ok_or_else(|| "integer overflow".to_string())
    }
    Ok(match (l, r) {
        (Value::Int(a), Value::Int(b)) => {
            let v = int_op(op, i64::from(*a), i64::from(*b))?;
            Value::Int(i32::try_from(v).map_err(|_| "integer overflow")?)
        }
        (Value::Double(_), _) | (_, Value::Double(_)) => {
            let (a, b) = (
                l.as_f64().ok_or("not a number")?,
                r.as_f64().ok_or("not a number")?,
            );
            Value::Double(match op {
                BinOp::Add => a + b,
                BinOp::Sub => a - b,
                BinOp::Mul => a * b,
                BinOp::Div => a / b,
                _ => a % b,
            })
        }
        _ => Value::Bigint(int_op(
            op,
            l.as_i64().ok_or("not a number")?,
            r.as_i64().ok_or("not a number")?,
        )?),
    })
}

/// Orders two values of comparable types; `None` when either is NULL or they cannot be compared.
pub fn compare(a: &Value, b: &Value) -> Option<std::cmp::Ordering> {
    match (a, b) {
        (Value::Null, _) | (_, Value::Null) => None,
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        (Value::Bool(x), Value::Bool(y)) => Some(x.cmp(y)),
        (Value::Bytes(x), Value::Bytes(y)) => Some(x.cmp(y)),
        (Value::Int(x), Value::Int(y)) => Some(x.cmp(y)),
        (Value::Bigint(x) | Value::Timestamp(x), Value::Bigint(y) | Value::Timestamp(y)) => {
            Some(x.cmp(y))
        }
        (Value::Timestamp(t), Value::String(s)) => functions::parse_iso(s).map(|u| t.cmp(&u)),
        (Value::String(s), Value::Timestamp(t)) => functions::parse_iso(s).map(|u| u.cmp(t)),
        _ => match (a.as_f64(), b.as_f64()) {
            (Some(x), Some(y)) => x.partial_cmp(&y),
            _ => (a == b).then_some(std::cmp::Ordering::Equal),
        },
    }
}

/// SQL LIKE: `%` any run, `_` one character.
pub fn like(s: &str, p: &str) -> bool {
    let s: Vec<char> = s.chars().collect();
    let p: Vec<char> = p.chars().collect();
    // Iterative matching with backtracking to the last `%` (linear in practice, no recursion).
    let (mut i, mut j) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while i < s.len() {
        if j < p.len() && (p[j] == '_' || p[j] == s[i]) {
            i += 1;
            j += 1;
        } else if j < p.len() && p[j] == '%' {
            star = Some((j, i));
            j += 1;
        } else if let Some((sj, si)) = star {
            j = sj + 1;
            i = si + 1;
            star = Some((sj, si + 1));
        } else {
            return false;
        }
    }
    while j < p.len() && p[j] == '%' {
        j += 1;
    }
    j == p.len()
}
