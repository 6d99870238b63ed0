//! Semantic analysis without a cluster: unknown streams and columns, type mismatches, aggregates planned but
//! refused at execution, and the evaluator's scalar functions on real rows.

use fjord_sql::catalog::{Catalog, Column, Format, SourceDef};
use fjord_sql::parser::{parse_statement, SourceKind, Statement};
use fjord_sql::plan::{plan_select, SelectPlan, Shape};
use fjord_sql::types::{SqlType, Value};
use fjord_sql::{ErrorKind, SqlError};

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
            col("USER_ID", SqlType::String, true),
            col("PAGE", SqlType::String, false),
            col("MS", SqlType::Bigint, false),
            col("SCORE", SqlType::Double, false),
            col("N", SqlType::Int, false),
            col(
                "INFO",
                SqlType::Struct(vec![("CITY".into(), SqlType::String)]),
                false,
            ),
            col("TAGS", SqlType::Array(Box::new(SqlType::String)), false),
            col("RAW", SqlType::String, false),
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

fn plan(sql: &str) -> Result<SelectPlan, SqlError> {
    let p = parse_statement(sql)?;
    let sel = match p.statement {
        Statement::Select(s) => s,
        Statement::CreateSource {
            as_select: Some(s), ..
        } => s,
        other => panic!("not a query: {other:?}"),
    };
    plan_select(&sel, &catalog()).map_err(|e| e.with_source(sql))
}

fn err(sql: &str) -> SqlError {
    plan(sql).expect_err(sql)
}

/// ROWTIME, ROWPARTITION, ROWOFFSET, then the columns of CLICKS.
fn row() -> Vec<Value> {
    vec![
        Value::Bigint(1_764_498_896_123),
        Value::Int(2),
        Value::Bigint(41),
        Value::String("alice".into()),
        Value::String("/Home/Index ".into()),
        Value::Bigint(1500),
        Value::Double(2.567),
        Value::Int(-7),
        Value::Struct(vec![("CITY".into(), Value::String("Oslo".into()))]),
        Value::Array(vec![Value::String("a".into()), Value::String("b".into())]),
        Value::String(r#"{"device":{"os":"linux"},"n":[1,2]}"#.into()),
    ]
}

#[test]
fn unknown_stream_names_what_exists() {
    let e = err("SELECT * FROM clikcs EMIT CHANGES");
    assert_eq!(e.kind, ErrorKind::Semantic);
    assert!(
        e.message
            .contains("unknown stream or table CLIKCS: these exist: CLICKS"),
        "{e}"
    );
    assert_eq!(e.pos.map(|p| (p.line, p.column)), Some((1, 15)));
    assert!(
        e.to_string()
            .contains("SELECT * FROM clikcs EMIT CHANGES\n              ^"),
        "{e}"
    );
}

#[test]
fn unknown_column_names_the_columns() {
    let e = err("SELECT user_id,\n  pgae FROM clicks EMIT CHANGES");
    assert!(
        e.message.contains(
            "unknown column PGAE: the columns are ROWTIME, ROWPARTITION, ROWOFFSET, USER_ID, PAGE"
        ),
        "{e}"
    );
    assert_eq!(e.pos.map(|p| (p.line, p.column)), Some((2, 3)));
    let e = err("SELECT info.town FROM clicks EMIT CHANGES");
    assert!(
        e.message
            .contains("unknown field TOWN: the fields are CITY"),
        "{e}"
    );
    let e = err("SELECT x.page FROM clicks c EMIT CHANGES");
    assert!(e.message.contains("unknown column X.PAGE"), "{e}");
}

#[test]
fn type_mismatches_are_errors() {
    let e = err("SELECT * FROM clicks WHERE page > 3 EMIT CHANGES");
    assert!(
        e.message
            .contains("type mismatch: cannot compare STRING (`page`) with INTEGER (`3`)"),
        "{e}"
    );
    let e = err("SELECT * FROM clicks WHERE ms EMIT CHANGES");
    assert!(
        e.message
            .contains("WHERE `ms` is BIGINT, expected a BOOLEAN"),
        "{e}"
    );
    let e = err("SELECT UCASE(ms) FROM clicks EMIT CHANGES");
    assert!(
        e.message.contains("argument 1 is BIGINT, expected STRING"),
        "{e}"
    );
    let e = err("SELECT ms * page FROM clicks EMIT CHANGES");
    assert!(
        e.message.contains("`page` is STRING, expected a number"),
        "{e}"
    );
    let e = err("SELECT CASE WHEN n > 1 THEN 'x' ELSE 2 END FROM clicks EMIT CHANGES");
    assert!(e.message.contains("type mismatch"), "{e}");
    let e = err("SELECT NOPE(page) FROM clicks EMIT CHANGES");
    assert!(e.message.contains("unknown function NOPE"), "{e}");
    let e = err("SELECT SUBSTRING(page, 'a') FROM clicks EMIT CHANGES");
    assert!(
        e.message.contains("argument 2 is STRING, expected INT"),
        "{e}"
    );
}

#[test]
fn aggregates_and_windows_are_checked_then_refused_at_execution() {
    let p = plan(
        "CREATE TABLE t AS SELECT user_id, COUNT(*) AS n, AVG(score) AS a FROM clicks \
         WINDOW TUMBLING (SIZE 1 MINUTE) GROUP BY user_id HAVING COUNT(*) > 2 EMIT FINAL",
    )
    .unwrap();
    assert!(matches!(
        p.shape,
        Shape::Aggregate {
            window: Some(_),
            ..
        }
    ));
    assert_eq!(p.projection[1].ty, SqlType::Bigint);
    assert_eq!(p.projection[2].ty, SqlType::Double);
    let e = p.require_stateless().unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotSupported);
    assert_eq!(
        e.message,
        "not supported yet: windowed aggregation runs on the streams library, coming next"
    );

    let e = err("SELECT page, COUNT(*) FROM clicks GROUP BY user_id EMIT CHANGES");
    assert!(
        e.message
            .contains("PAGE is neither in GROUP BY nor an aggregate"),
        "{e}"
    );
    let e = err("SELECT SUM(page) FROM clicks GROUP BY user_id EMIT CHANGES");
    assert!(e.message.contains("needs a number"), "{e}");
    let e = err("SELECT * FROM clicks WHERE COUNT(*) > 1 EMIT CHANGES");
    assert!(
        e.message
            .contains("only allowed in the SELECT list or HAVING"),
        "{e}"
    );
    let e = err("SELECT * FROM clicks WINDOW TUMBLING (SIZE 1 SECOND) EMIT CHANGES");
    assert!(e.message.contains("WINDOW needs an aggregation"), "{e}");
    let e = err("SELECT * FROM clicks EMIT FINAL");
    assert!(
        e.message
            .contains("EMIT FINAL needs a windowed aggregation"),
        "{e}"
    );
    let e = err("SELECT a.page FROM clicks a JOIN clicks b ON a.user_id = b.user_id EMIT CHANGES");
    assert!(e.message.contains("needs a WITHIN"), "{e}");
    let p = plan("SELECT a.page, b.ms FROM clicks a JOIN clicks b WITHIN 1 MINUTE ON a.user_id = b.user_id EMIT CHANGES").unwrap();
    assert!(matches!(p.shape, Shape::Join { .. }));
    assert!(p
        .require_stateless()
        .unwrap_err()
        .message
        .contains("joins run on the streams library"));
}

#[test]
fn projection_and_scalar_functions_evaluate() {
    let p = plan(
        "SELECT user_id, UCASE(TRIM(page)) AS up, LCASE(page) lo, LEN(page) AS len, SUBSTRING(page, 2, 4) AS sub, \
         CONCAT(user_id, '-', 'x') AS cat, REPLACE(page, 'Index', 'Main') AS rep, SPLIT('a,b,c', ',') AS parts, \
         ABS(n) AS a, ROUND(score) AS r0, ROUND(score, 2) AS r2, FLOOR(score) AS f, CEIL(score) AS c, \
         COALESCE(NULL, page) AS co, IFNULL(NULL, 5) AS ifn, \
         CASE WHEN ms > 1000 THEN 'slow' WHEN ms > 100 THEN 'ok' ELSE 'fast' END AS speed, \
         CAST(ms AS STRING) AS s, CAST('42' AS INT) + 1 AS i, \
         TIMESTAMPTOSTRING(ROWTIME, 'yyyy-MM-dd HH:mm:ss', 'UTC') AS ts, \
         STRINGTOTIMESTAMP('2025-11-30 10:34:56', 'yyyy-MM-dd HH:mm:ss') AS back, \
         EXTRACTJSONFIELD(raw, '$.device.os') AS os, info.city AS city, tags[2] AS t2, \
         ROWPARTITION AS p, ROWOFFSET AS o, page || '!' AS bang \
         FROM clicks WHERE ms BETWEEN 1000 AND 2000 AND page LIKE '/Home%' AND n IN (1, -7) EMIT CHANGES",
    )
    .unwrap();
    assert_eq!(p.shape, Shape::Stateless);
    p.require_stateless().unwrap();
    assert!(p.projection[0].is_key);
    let r = row();
    assert_eq!(
        p.filter.as_ref().unwrap().eval(&r).unwrap(),
        Value::Bool(true)
    );
    let out: Vec<(String, Value)> = p
        .projection
        .iter()
        .map(|c| (c.name.clone(), c.expr.eval(&r).unwrap()))
        .collect();
    let get = |n: &str| {
        out.iter()
            .find(|(k, _)| k == n)
            .unwrap_or_else(|| panic!("no {n}"))
            .1
            .clone()
    };
    let st = |s: &str| Value::String(s.into());
    assert_eq!(get("UP"), st("/HOME/INDEX"));
    assert_eq!(get("LO"), st("/home/index "));
    assert_eq!(get("LEN"), Value::Int(12));
    assert_eq!(get("SUB"), st("Home"));
    assert_eq!(get("CAT"), st("alice-x"));
    assert_eq!(get("REP"), st("/Home/Main "));
    assert_eq!(get("PARTS"), Value::Array(vec![st("a"), st("b"), st("c")]));
    assert_eq!(get("A"), Value::Int(7));
    assert_eq!(get("R0"), Value::Bigint(3));
    assert_eq!(get("R2"), Value::Double(2.57));
    assert_eq!(get("F"), Value::Double(2.0));
    assert_eq!(get("C"), Value::Double(3.0));
    assert_eq!(get("CO"), st("/Home/Index "));
    assert_eq!(get("IFN"), Value::Int(5));
    assert_eq!(get("SPEED"), st("slow"));
    assert_eq!(get("S"), st("1500"));
    assert_eq!(get("I"), Value::Int(43));
    assert_eq!(get("TS"), st("2025-11-30 10:34:56"));
    assert_eq!(get("BACK"), Value::Bigint(1_764_498_896_000));
    assert_eq!(get("OS"), st("linux"));
    assert_eq!(get("CITY"), st("Oslo"));
    assert_eq!(get("T2"), st("b"));
    assert_eq!(get("P"), Value::Int(2));
    assert_eq!(get("O"), Value::Bigint(41));
    assert_eq!(get("BANG"), st("/Home/Index !"));

    // NULL in, NULL out; three-valued logic; a bad cast is an error for the caller to report.
    let mut r2 = row();
    r2[5] = Value::Null;
    assert_eq!(p.filter.as_ref().unwrap().eval(&r2).unwrap(), Value::Null);
    let bad = plan("SELECT CAST(page AS INT) FROM clicks EMIT CHANGES").unwrap();
    assert!(bad.projection[0].expr.eval(&r).is_err());
    let div = plan("SELECT n / 0 FROM clicks EMIT CHANGES").unwrap();
    assert!(div.projection[0]
        .expr
        .eval(&r)
        .unwrap_err()
        .contains("division by zero"));
}

#[test]
fn partition_by_keys_the_result_by_its_expression_in_the_select_list() {
    let p = plan("CREATE STREAM x AS SELECT ms, page FROM clicks PARTITION BY page").unwrap();
    p.require_stateless().unwrap();
    let keys: Vec<(&str, bool)> = p
        .projection
        .iter()
        .map(|c| (c.name.as_str(), c.is_key))
        .collect();
    assert_eq!(keys, [("MS", false), ("PAGE", true)]);
    let e = err("CREATE STREAM x AS SELECT page FROM clicks PARTITION BY nope");
    assert!(e.message.contains("unknown column NOPE"), "{e}");
    let e = err("CREATE STREAM x AS SELECT ms FROM clicks PARTITION BY page");
    assert!(e.message.contains("must be in the SELECT list"), "{e}");
}

/// PARTITION BY of two expressions makes both key columns (ksqlDB's multi-column key); each must be selected,
/// once. Before, more than one expression was refused.
#[test]
fn partition_by_two_expressions_keys_the_result_by_both() {
    let p = plan("CREATE STREAM x AS SELECT ms, page, n FROM clicks PARTITION BY page, n").unwrap();
    p.require_stateless().unwrap();
    let keys: Vec<(&str, bool)> = p
        .projection
        .iter()
        .map(|c| (c.name.as_str(), c.is_key))
        .collect();
    assert_eq!(keys, [("MS", false), ("PAGE", true), ("N", true)]);
    let e = err("CREATE STREAM x AS SELECT page FROM clicks PARTITION BY page, n");
    assert!(
        e.message.contains("PARTITION BY n") && e.message.contains("must be in the SELECT list"),
        "{e}"
    );
    let e = err("CREATE STREAM x AS SELECT page FROM clicks PARTITION BY page, page");
    assert!(e.message.contains("appears twice"), "{e}");
}

/// A key column selected twice is the key once: the second copy is a value column (as in ksqlDB), so a
/// single-key stream keeps its one KAFKA key. With several key columns allowed, both copies had become keys (a
/// two-column key the KAFKA format cannot hold).
#[test]
fn a_key_column_selected_twice_is_the_key_once() {
    let p = plan("CREATE STREAM x AS SELECT user_id, user_id AS k2, page FROM clicks").unwrap();
    p.require_stateless().unwrap();
    let keys: Vec<(&str, bool)> = p
        .projection
        .iter()
        .map(|c| (c.name.as_str(), c.is_key))
        .collect();
    assert_eq!(keys, [("USER_ID", true), ("K2", false), ("PAGE", false)]);
}

#[test]
fn duplicate_output_names_are_refused() {
    let e = err("SELECT page, UCASE(page) AS page FROM clicks EMIT CHANGES");
    assert!(e.message.contains("PAGE appears twice"), "{e}");
}

#[test]
fn array_indexes_from_record_data_never_panic() {
    // N is -7 in row(); the index is computed from record data, down to i64::MIN.
    let p = plan(
        "SELECT tags[-1] AS last, tags[-2] AS first, tags[-3] AS before, tags[CAST(ms AS BIGINT) - 9223372036854775807 - 1501] AS min \
         FROM clicks EMIT CHANGES",
    )
    .unwrap();
    let r = row();
    let got: Vec<Value> = p
        .projection
        .iter()
        .map(|c| c.expr.eval(&r).unwrap())
        .collect();
    assert_eq!(
        got,
        vec![
            Value::String("b".into()),
            Value::String("a".into()),
            Value::Null,
            Value::Null
        ]
    );
}
