//! Fjord's SQL dialect: statements are parsed here, token by token, on top of sqlparser's tokenizer; expressions
//! (WHERE, projections, function calls, CASE, CAST) are parsed by sqlparser's expression parser. sqlparser's
//! generic dialect cannot parse ksqlDB's statements (`WINDOW TUMBLING (SIZE 1 MINUTE)`, `EMIT CHANGES`,
//! `CREATE STREAM ... WITH (kafka_topic=...)`), hence our own statement grammar.
//!
//! Unquoted identifiers are upper-cased, as ksqlDB does; quoted ones (`` `name` `` or `"name"`) keep their case.
//! Every error names the token it stopped at (line, column) and what was expected.

use sqlparser::ast::Expr as AstExpr;
use sqlparser::dialect::Dialect;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::{Location, Span, Token, TokenWithSpan, Tokenizer};

use crate::error::{from_sqlparser, Pos, Result, SqlError};
use crate::types::SqlType;

/// The dialect handed to sqlparser's tokenizer and expression parser.
#[derive(Debug, Default)]
pub struct FjordDialect;

impl Dialect for FjordDialect {
    fn is_identifier_start(&self, ch: char) -> bool {
        ch.is_alphabetic() || ch == '_'
    }

    fn is_identifier_part(&self, ch: char) -> bool {
        ch.is_alphanumeric() || ch == '_' || ch == '$'
    }

    fn is_delimited_identifier_start(&self, ch: char) -> bool {
        ch == '`' || ch == '"'
    }
}

/// A name as written, normalized (unquoted: upper case), with where it was written.
#[derive(Clone, Debug, PartialEq)]
pub struct Name {
    pub value: String,
    pub pos: Option<Pos>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum SourceKind {
    Stream,
    Table,
}

impl SourceKind {
    pub fn word(self) -> &'static str {
        match self {
            SourceKind::Stream => "STREAM",
            SourceKind::Table => "TABLE",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum KeyKind {
    None,
    /// `KEY` (a stream's key column).
    Key,
    /// `PRIMARY KEY` (a table's).
    PrimaryKey,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ColumnDef {
    pub name: Name,
    pub ty: SqlType,
    pub key: KeyKind,
}

/// A `WITH (...)` property value.
#[derive(Clone, Debug, PartialEq)]
pub enum PropValue {
    String(String),
    Number(String),
    Bool(bool),
}

impl PropValue {
    pub fn as_text(&self) -> String {
        match self {
            PropValue::String(s) | PropValue::Number(s) => s.clone(),
            PropValue::Bool(b) => b.to_string(),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Property {
    /// Upper-cased (`KAFKA_TOPIC`).
    pub name: String,
    pub value: PropValue,
    pub pos: Option<Pos>,
}

/// A duration as written (`1 MINUTE`), in milliseconds.
pub type Millis = u64;

#[derive(Clone, Debug, PartialEq)]
pub enum WindowSpec {
    Tumbling {
        size: Millis,
        grace: Option<Millis>,
    },
    Hopping {
        size: Millis,
        advance: Millis,
        grace: Option<Millis>,
    },
    Session {
        gap: Millis,
        grace: Option<Millis>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Emit {
    Changes,
    Final,
}

#[derive(Clone, Debug, PartialEq)]
pub enum SelectItem {
    /// `*`
    Wildcard,
    /// `s.*`
    QualifiedWildcard(Name),
    Expr {
        expr: Box<AstExpr>,
        alias: Option<Name>,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub struct NamedSource {
    pub name: Name,
    pub alias: Option<Name>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JoinKind {
    Inner,
    Left,
    Right,
    Full,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Join {
    pub kind: JoinKind,
    pub source: NamedSource,
    /// `WITHIN n unit` or `WITHIN (before, after)`: (before, after) in milliseconds.
    pub within: Option<(Millis, Millis)>,
    pub grace: Option<Millis>,
    pub on: AstExpr,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Select {
    pub items: Vec<SelectItem>,
    pub from: NamedSource,
    pub joins: Vec<Join>,
    pub window: Option<WindowSpec>,
    pub filter: Option<AstExpr>,
    pub group_by: Vec<AstExpr>,
    pub partition_by: Vec<AstExpr>,
    pub having: Option<AstExpr>,
    pub emit: Option<Emit>,
    pub limit: Option<u64>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Statement {
    CreateSource {
        kind: SourceKind,
        or_replace: bool,
        if_not_exists: bool,
        name: Name,
        columns: Vec<ColumnDef>,
        with: Vec<Property>,
        as_select: Option<Box<Select>>,
    },
    Select(Box<Select>),
    ShowStreams,
    ShowTables,
    ShowQueries,
    ShowTopics,
    ShowProperties,
    Describe {
        name: Name,
        extended: bool,
    },
    Drop {
        kind: SourceKind,
        if_exists: bool,
        name: Name,
        delete_topic: bool,
    },
    Terminate {
        /// `None`: `TERMINATE ALL`.
        query: Option<Name>,
    },
    ExplainQuery(Name),
    Explain(Box<Statement>),
    AlterAddColumns {
        kind: SourceKind,
        name: Name,
        columns: Vec<ColumnDef>,
    },
    InsertValues {
        target: Name,
        columns: Option<Vec<Name>>,
        values: Vec<AstExpr>,
    },
    Set {
        name: String,
        value: String,
    },
    Unset {
        name: String,
    },
}

/// A statement with its text (from its first token to the end of its last, without the `;`).
#[derive(Clone, Debug, PartialEq)]
pub struct Parsed {
    pub statement: Statement,
    pub text: String,
}

/// Parses a script of `;`-separated statements. Any error fails the whole script (nothing runs), carrying the
/// position of the offending token and the source line with a caret.
pub fn parse_script(sql: &str) -> Result<Vec<Parsed>> {
    parse_script_inner(sql).map_err(|e| e.with_source(sql))
}

/// Parses exactly one statement (a trailing `;` is allowed).
pub fn parse_statement(sql: &str) -> Result<Parsed> {
    let mut all = parse_script(sql)?;
    match all.len() {
        1 => Ok(all.remove(0)),
        0 => Err(SqlError::syntax(
            "expected a statement, found nothing",
            None,
        )),
        n => Err(SqlError::syntax(
            format!("expected one statement, found {n}"),
            None,
        )),
    }
}

/// The most statements one request may hold.
pub const MAX_STATEMENTS: usize = 1000;

fn parse_script_inner(sql: &str) -> Result<Vec<Parsed>> {
    let dialect = FjordDialect;
    let tokens = Tokenizer::new(&dialect, sql)
        .tokenize_with_location()
        .map_err(|e| SqlError::syntax(e.message.clone(), Pos::from_location(e.location)))?;
    let tokens = split_shift_right(tokens);
    let parser = Parser::new(&dialect)
        .with_recursion_limit(50)
        .with_tokens_with_locations(tokens);
    let mut p = P {
        p: parser,
        type_depth: 0,
    };
    let line_starts = line_starts(sql);
    let mut out = Vec::new();
    loop {
        while p.p.consume_token(&Token::SemiColon) {}
        if p.peek() == Token::EOF {
            break;
        }
        if out.len() >= MAX_STATEMENTS {
            return Err(p.err_here(&format!(
                "too many statements in one request (at most {MAX_STATEMENTS})"
            )));
        }
        let start = p.p.peek_token().span.start;
        let statement = p.statement()?;
        let end = p.p.get_current_token().span.end;
        match p.peek() {
            Token::SemiColon | Token::EOF => {}
            _ => return Err(p.expected("`;` or the end of the statement")),
        }
        let text = slice(sql, &line_starts, start, end).trim().to_string();
        out.push(Parsed { statement, text });
    }
    Ok(out)
}

/// `>>` is a shift operator to sqlparser but closes two type parameters here (`ARRAY<ARRAY<INT>>`); ksqlDB has
/// no shift operators.
fn split_shift_right(tokens: Vec<TokenWithSpan>) -> Vec<TokenWithSpan> {
    let mut out = Vec::with_capacity(tokens.len());
    for t in tokens {
        if t.token == Token::ShiftRight {
            let first = Span::new(t.span.start, t.span.start);
            let second_start = Location::new(t.span.start.line, t.span.start.column + 1);
            out.push(TokenWithSpan::new(Token::Gt, first));
            out.push(TokenWithSpan::new(
                Token::Gt,
                Span::new(second_start, second_start),
            ));
        } else {
            out.push(t);
        }
    }
    out
}

fn line_starts(sql: &str) -> Vec<usize> {
    let mut v = vec![0];
    for (i, c) in sql.char_indices() {
        if c == '\n' {
            v.push(i + 1);
        }
    }
    v
}

/// Byte offset of a (line, column) location; columns count characters.
fn offset(sql: &str, line_starts: &[usize], l: Location) -> usize {
    let Some(&start) = line_starts.get(l.line.saturating_sub(1) as usize) else {
        return sql.len();
    };
    sql[start..]
        .char_indices()
        .nth(l.column.saturating_sub(1) as usize)
        .map_or(sql.len(), |(i, _)| start + i)
}

fn slice(sql: &str, line_starts: &[usize], start: Location, end: Location) -> String {
    let a = offset(sql, line_starts, start);
    // `end` is just past the last token.
    let b = offset(sql, line_starts, end);
    if a <= b && b <= sql.len() {
        sql[a..b].to_string()
    } else {
        String::new()
    }
}

/// Words that end a select item, a source name or an expression list; an unquoted one is never taken as an
/// implicit alias.
const RESERVED: &[&str] = &[
    "FROM",
    "WHERE",
    "WINDOW",
    "GROUP",
    "HAVING",
    "EMIT",
    "LIMIT",
    "PARTITION",
    "JOIN",
    "LEFT",
    "RIGHT",
    "FULL",
    "INNER",
    "OUTER",
    "ON",
    "WITHIN",
    "AS",
    "AND",
    "OR",
    "NOT",
    "WITH",
    "SELECT",
    "BY",
];

struct P<'a> {
    p: Parser<'a>,
    /// How deeply types nest here (`ARRAY<ARRAY<...>>`), bounded so that hostile input cannot overflow the stack.
    type_depth: usize,
}

/// The deepest nesting of types (`ARRAY<MAP<STRING, STRUCT<...>>>`) accepted.
const MAX_TYPE_DEPTH: usize = 32;

impl P<'_> {
    fn peek(&self) -> Token {
        self.p.peek_token().token
    }

    fn here(&self) -> Option<Pos> {
        Pos::from_location(self.p.peek_token().span.start)
    }

    fn err_here(&self, msg: &str) -> SqlError {
        SqlError::syntax(msg, self.here())
    }

    fn expected(&self, what: &str) -> SqlError {
        let t = self.p.peek_token();
        let found = match &t.token {
            Token::EOF => "the end of the input".to_string(),
            other => format!("`{other}`"),
        };
        SqlError::syntax(
            format!("expected {what}, found {found}"),
            Pos::from_location(t.span.start),
        )
    }

    fn lift<T>(&self, r: std::result::Result<T, sqlparser::parser::ParserError>) -> Result<T> {
        r.map_err(|e| from_sqlparser(&e, self.here()))
    }

    /// Whether the next token is the unquoted word `w` (any case).
    fn peek_kw(&self, w: &str) -> bool {
        self.peek_nth_kw(0, w)
    }

    fn peek_nth_kw(&self, n: usize, w: &str) -> bool {
        matches!(&self.p.peek_nth_token(n).token, Token::Word(word) if word.quote_style.is_none() && word.value.eq_ignore_ascii_case(w))
    }

    /// Consumes the word `w` if it is next.
    fn kw(&mut self, w: &str) -> bool {
        if self.peek_kw(w) {
            self.p.next_token();
            true
        } else {
            false
        }
    }

    fn kws(&mut self, ws: &[&str]) -> bool {
        if ws.iter().enumerate().all(|(i, w)| self.peek_nth_kw(i, w)) {
            for _ in ws {
                self.p.next_token();
            }
            true
        } else {
            false
        }
    }

    fn expect_kw(&mut self, w: &str) -> Result<()> {
        if self.kw(w) {
            Ok(())
        } else {
            Err(self.expected(w))
        }
    }

    fn expect_token(&mut self, t: Token, what: &str) -> Result<()> {
        if self.p.consume_token(&t) {
            Ok(())
        } else {
            Err(self.expected(what))
        }
    }

    fn name(&mut self, what: &str) -> Result<Name> {
        let t = self.p.peek_token();
        match &t.token {
            Token::Word(w)
                if w.quote_style.is_none()
                    && !RESERVED.contains(&w.value.to_ascii_uppercase().as_str()) =>
            {
                self.p.next_token();
                Ok(Name {
                    value: w.value.to_ascii_uppercase(),
                    pos: Pos::from_location(t.span.start),
                })
            }
            Token::Word(w) if w.quote_style.is_some() => {
                self.p.next_token();
                if w.value.is_empty() {
                    return Err(SqlError::syntax(
                        format!("{what} must not be empty"),
                        Pos::from_location(t.span.start),
                    ));
                }
                Ok(Name {
                    value: w.value.clone(),
                    pos: Pos::from_location(t.span.start),
                })
            }
            _ => Err(self.expected(what)),
        }
    }

    fn expr(&mut self) -> Result<AstExpr> {
        // sqlparser takes most keywords for column names; a clause word where an expression should start is a
        // missing expression (`SELECT a, FROM s`).
        let clause_word = match self.peek() {
            Token::Word(w) if w.quote_style.is_none() => {
                let u = w.value.to_ascii_uppercase();
                u != "NOT" && RESERVED.contains(&u.as_str())
            }
            _ => false,
        };
        if clause_word {
            return Err(self.expected("an expression"));
        }
        let r = self.p.parse_expr();
        self.lift(r)
    }

    fn uint(&mut self, what: &str) -> Result<u64> {
        match self.peek() {
            Token::Number(n, _) => match n.parse::<u64>() {
                Ok(v) => {
                    self.p.next_token();
                    Ok(v)
                }
                Err(_) => Err(self.expected(what)),
            },
            _ => Err(self.expected(what)),
        }
    }

    fn statement(&mut self) -> Result<Statement> {
        if self.kw("CREATE") {
            return self.create();
        }
        if self.peek_kw("SELECT") {
            return Ok(Statement::Select(Box::new(self.select()?)));
        }
        if self.kw("SHOW") || self.kw("LIST") {
            return self.show();
        }
        if self.kw("DESCRIBE") {
            let extended = self.kw("EXTENDED");
            if self.peek_kw("STREAMS") || self.peek_kw("TABLES") {
                return self.show();
            }
            let name = self.name("a stream or table name")?;
            return Ok(Statement::Describe { name, extended });
        }
        if self.kw("DROP") {
            let kind = self.source_kind()?;
            let if_exists = self.kws(&["IF", "EXISTS"]);
            let name = self.name("a stream or table name")?;
            let delete_topic = self.kws(&["DELETE", "TOPIC"]);
            return Ok(Statement::Drop {
                kind,
                if_exists,
                name,
                delete_topic,
            });
        }
        if self.kw("TERMINATE") {
            if self.kw("ALL") {
                return Ok(Statement::Terminate { query: None });
            }
            let q = self.name("a query id (see SHOW QUERIES) or ALL")?;
            return Ok(Statement::Terminate { query: Some(q) });
        }
        if self.kw("EXPLAIN") {
            let starts_statement = ["CREATE", "SELECT", "INSERT"]
                .iter()
                .any(|w| self.peek_kw(w));
            if starts_statement {
                return Ok(Statement::Explain(Box::new(self.statement()?)));
            }
            let q = self.name("a query id or a statement")?;
            return Ok(Statement::ExplainQuery(q));
        }
        if self.kw("ALTER") {
            let kind = self.source_kind()?;
            let name = self.name("a stream or table name")?;
            let mut columns = Vec::new();
            loop {
                self.expect_kw("ADD")?;
                self.kw("COLUMN");
                columns.push(self.column_def()?);
                if !self.p.consume_token(&Token::Comma) {
                    break;
                }
            }
            return Ok(Statement::AlterAddColumns {
                kind,
                name,
                columns,
            });
        }
        if self.kw("INSERT") {
            self.expect_kw("INTO")?;
            let target = self.name("a stream name")?;
            let mut columns = None;
            if self.p.consume_token(&Token::LParen) {
                let mut cols = vec![self.name("a column name")?];
                while self.p.consume_token(&Token::Comma) {
                    cols.push(self.name("a column name")?);
                }
                self.expect_token(Token::RParen, "`,` or `)`")?;
                columns = Some(cols);
            }
            if self.peek_kw("SELECT") {
                return Err(SqlError::not_supported(
                    "INSERT INTO ... SELECT (use INSERT INTO ... VALUES, or CREATE STREAM ... AS SELECT)",
                ));
            }
            self.expect_kw("VALUES")?;
            self.expect_token(Token::LParen, "`(`")?;
            let mut values = vec![self.expr()?];
            while self.p.consume_token(&Token::Comma) {
                values.push(self.expr()?);
            }
            self.expect_token(Token::RParen, "`,` or `)`")?;
            return Ok(Statement::InsertValues {
                target,
                columns,
                values,
            });
        }
        if self.kw("SET") {
            let name = self.string("a quoted property name, e.g. 'auto.offset.reset'")?;
            self.expect_token(Token::Eq, "`=`")?;
            let value = self.string("a quoted value, e.g. 'earliest'")?;
            return Ok(Statement::Set { name, value });
        }
        if self.kw("UNSET") {
            let name = self.string("a quoted property name")?;
            return Ok(Statement::Unset { name });
        }
        Err(self.expected(
            "a statement (CREATE, SELECT, INSERT, SHOW, LIST, DESCRIBE, DROP, TERMINATE, EXPLAIN, ALTER, SET, UNSET)",
        ))
    }

    fn string(&mut self, what: &str) -> Result<String> {
        match self.peek() {
            Token::SingleQuotedString(s) => {
                self.p.next_token();
                Ok(s)
            }
            _ => Err(self.expected(what)),
        }
    }

    fn show(&mut self) -> Result<Statement> {
        let s = if self.kw("STREAMS") {
            Statement::ShowStreams
        } else if self.kw("TABLES") {
            Statement::ShowTables
        } else if self.kw("QUERIES") {
            Statement::ShowQueries
        } else if self.kw("TOPICS") {
            Statement::ShowTopics
        } else if self.kw("PROPERTIES") {
            Statement::ShowProperties
        } else {
            return Err(self.expected("STREAMS, TABLES, QUERIES, TOPICS or PROPERTIES"));
        };
        // `SHOW STREAMS EXTENDED` is accepted and answered as SHOW STREAMS.
        self.kw("EXTENDED");
        Ok(s)
    }

    fn source_kind(&mut self) -> Result<SourceKind> {
        if self.kw("STREAM") {
            Ok(SourceKind::Stream)
        } else if self.kw("TABLE") {
            Ok(SourceKind::Table)
        } else {
            Err(self.expected("STREAM or TABLE"))
        }
    }

    fn create(&mut self) -> Result<Statement> {
        let or_replace = self.kws(&["OR", "REPLACE"]);
        let kind = self.source_kind()?;
        let if_not_exists = self.kws(&["IF", "NOT", "EXISTS"]);
        let name = self.name(&format!("a {} name", kind.word().to_lowercase()))?;
        let mut columns = Vec::new();
        if self.p.consume_token(&Token::LParen) {
            loop {
                columns.push(self.column_def()?);
                if !self.p.consume_token(&Token::Comma) {
                    break;
                }
            }
            self.expect_token(Token::RParen, "`,` or `)` after a column")?;
        }
        let mut with = Vec::new();
        if self.kw("WITH") {
            self.expect_token(Token::LParen, "`(`")?;
            loop {
                let pos = self.here();
                let pname = self.name("a property name, e.g. kafka_topic")?;
                self.expect_token(Token::Eq, "`=`")?;
                let value = match self.peek() {
                    Token::SingleQuotedString(s) => PropValue::String(s),
                    Token::Number(n, _) => PropValue::Number(n),
                    Token::Word(w) if w.value.eq_ignore_ascii_case("true") => PropValue::Bool(true),
                    Token::Word(w) if w.value.eq_ignore_ascii_case("false") => {
                        PropValue::Bool(false)
                    }
                    _ => return Err(self.expected("a quoted string, a number or true/false")),
                };
                self.p.next_token();
                with.push(Property {
                    name: pname.value.to_ascii_uppercase(),
                    value,
                    pos,
                });
                if !self.p.consume_token(&Token::Comma) {
                    break;
                }
            }
            self.expect_token(Token::RParen, "`,` or `)` after a property")?;
        }
        let as_select = if self.kw("AS") {
            if !self.peek_kw("SELECT") {
                return Err(self.expected("SELECT"));
            }
            Some(Box::new(self.select()?))
        } else {
            None
        };
        if as_select.is_none() && columns.is_empty() && with.is_empty() {
            return Err(self.expected("`(` and the columns, WITH (...) or AS SELECT"));
        }
        Ok(Statement::CreateSource {
            kind,
            or_replace,
            if_not_exists,
            name,
            columns,
            with,
            as_select,
        })
    }

    fn column_def(&mut self) -> Result<ColumnDef> {
        let name = self.name("a column name")?;
        let ty = self.data_type()?;
        let key = if self.kws(&["PRIMARY", "KEY"]) {
            KeyKind::PrimaryKey
        } else if self.kw("KEY") {
            KeyKind::Key
        } else {
            KeyKind::None
        };
        Ok(ColumnDef { name, ty, key })
    }

    fn data_type(&mut self) -> Result<SqlType> {
        if self.type_depth >= MAX_TYPE_DEPTH {
            return Err(self.err_here(&format!(
                "types are nested too deeply (at most {MAX_TYPE_DEPTH} levels)"
            )));
        }
        self.type_depth += 1;
        let r = self.data_type_inner();
        self.type_depth -= 1;
        r
    }

    fn data_type_inner(&mut self) -> Result<SqlType> {
        const TYPES: &str = "a type (BOOLEAN, INT, BIGINT, DOUBLE, DECIMAL(p, s), STRING, VARCHAR, BYTES, TIMESTAMP, DATE, TIME, ARRAY<T>, MAP<K, V>, STRUCT<name T, ...>)";
        let word = match self.peek() {
            Token::Word(w) if w.quote_style.is_none() => w.value.to_ascii_uppercase(),
            _ => return Err(self.expected(TYPES)),
        };
        let simple = match word.as_str() {
            "BOOLEAN" | "BOOL" => Some(SqlType::Boolean),
            "INT" | "INTEGER" => Some(SqlType::Int),
            "BIGINT" => Some(SqlType::Bigint),
            "DOUBLE" => Some(SqlType::Double),
            "STRING" | "VARCHAR" => Some(SqlType::String),
            "BYTES" => Some(SqlType::Bytes),
            "TIMESTAMP" => Some(SqlType::Timestamp),
            "DATE" => Some(SqlType::Date),
            "TIME" => Some(SqlType::Time),
            "DECIMAL" | "ARRAY" | "MAP" | "STRUCT" => None,
            _ => return Err(self.expected(TYPES)),
        };
        self.p.next_token();
        if let Some(ty) = simple {
            // VARCHAR(n): the length is accepted and not enforced, as in ksqlDB.
            if word == "VARCHAR" && self.p.consume_token(&Token::LParen) {
                self.uint("a length")?;
                self.expect_token(Token::RParen, "`)`")?;
            }
            return Ok(ty);
        }
        Ok(match word.as_str() {
            "DECIMAL" => {
                self.expect_token(Token::LParen, "`(` and the precision, e.g. DECIMAL(10, 2)")?;
                let pos = self.here();
                let p = self.uint("the precision")?;
                self.expect_token(Token::Comma, "`,` and the scale")?;
                let s = self.uint("the scale")?;
                self.expect_token(Token::RParen, "`)`")?;
                if !(1..=38).contains(&p) || s > p {
                    return Err(SqlError::syntax(
                        format!("DECIMAL({p}, {s}): the precision must be 1 to 38 and the scale at most the precision"),
                        pos,
                    ));
                }
                SqlType::Decimal(p as u8, s as u8)
            }
            "ARRAY" => {
                self.expect_token(Token::Lt, "`<` and the element type, e.g. ARRAY<STRING>")?;
                let t = self.data_type()?;
                self.expect_token(Token::Gt, "`>`")?;
                SqlType::Array(Box::new(t))
            }
            "MAP" => {
                self.expect_token(Token::Lt, "`<`, e.g. MAP<STRING, INT>")?;
                let k = self.data_type()?;
                self.expect_token(Token::Comma, "`,` and the value type")?;
                let v = self.data_type()?;
                self.expect_token(Token::Gt, "`>`")?;
                SqlType::Map(Box::new(k), Box::new(v))
            }
            _ => {
                self.expect_token(Token::Lt, "`<`, e.g. STRUCT<name STRING>")?;
                let mut fields: Vec<(String, SqlType)> = Vec::new();
                if !self.p.consume_token(&Token::Gt) {
                    loop {
                        let n = self.name("a field name")?;
                        if fields.iter().any(|(f, _)| *f == n.value) {
                            return Err(SqlError::syntax(
                                format!("the field {} appears twice", n.value),
                                n.pos,
                            ));
                        }
                        let t = self.data_type()?;
                        fields.push((n.value, t));
                        if !self.p.consume_token(&Token::Comma) {
                            break;
                        }
                    }
                    self.expect_token(Token::Gt, "`,` or `>`")?;
                }
                SqlType::Struct(fields)
            }
        })
    }

    fn duration(&mut self) -> Result<Millis> {
        let n = self.uint("a number, e.g. 1 MINUTE")?;
        let unit = match self.peek() {
            Token::Word(w) => w.value.to_ascii_uppercase(),
            _ => String::new(),
        };
        let ms: u64 = match unit.trim_end_matches('S') {
            "MILLISECOND" => 1,
            "SECOND" => 1_000,
            "MINUTE" => 60_000,
            "HOUR" => 3_600_000,
            "DAY" => 86_400_000,
            _ => {
                return Err(
                    self.expected("a time unit (MILLISECONDS, SECONDS, MINUTES, HOURS, DAYS)")
                )
            }
        };
        let pos = self.here();
        self.p.next_token();
        n.checked_mul(ms)
            .ok_or_else(|| SqlError::syntax("the duration is too long", pos))
    }

    fn grace(&mut self) -> Result<Option<Millis>> {
        if self.kws(&["GRACE", "PERIOD"]) {
            Ok(Some(self.duration()?))
        } else {
            Ok(None)
        }
    }

    fn window(&mut self) -> Result<WindowSpec> {
        if self.kw("TUMBLING") {
            self.expect_token(Token::LParen, "`(`")?;
            self.expect_kw("SIZE")?;
            let size = self.duration()?;
            let mut grace = None;
            while self.p.consume_token(&Token::Comma) {
                if self.peek_kw("GRACE") {
                    grace = self.grace()?;
                } else if self.kw("RETENTION") {
                    self.duration()?;
                } else {
                    return Err(self.expected("GRACE PERIOD or RETENTION"));
                }
            }
            self.expect_token(Token::RParen, "`,` or `)`")?;
            Ok(WindowSpec::Tumbling { size, grace })
        } else if self.kw("HOPPING") {
            self.expect_token(Token::LParen, "`(`")?;
            self.expect_kw("SIZE")?;
            let size = self.duration()?;
            self.expect_token(Token::Comma, "`,` ADVANCE BY")?;
            self.expect_kw("ADVANCE")?;
            self.expect_kw("BY")?;
            let pos = self.here();
            let advance = self.duration()?;
            if advance == 0 || advance > size {
                return Err(SqlError::syntax(
                    "ADVANCE BY must be more than zero and at most the window SIZE",
                    pos,
                ));
            }
            let mut grace = None;
            while self.p.consume_token(&Token::Comma) {
                if self.peek_kw("GRACE") {
                    grace = self.grace()?;
                } else if self.kw("RETENTION") {
                    self.duration()?;
                } else {
                    return Err(self.expected("GRACE PERIOD or RETENTION"));
                }
            }
            self.expect_token(Token::RParen, "`,` or `)`")?;
            Ok(WindowSpec::Hopping {
                size,
                advance,
                grace,
            })
        } else if self.kw("SESSION") {
            self.expect_token(Token::LParen, "`(`")?;
            let gap = self.duration()?;
            let mut grace = None;
            while self.p.consume_token(&Token::Comma) {
                if self.peek_kw("GRACE") {
                    grace = self.grace()?;
                } else if self.kw("RETENTION") {
                    self.duration()?;
                } else {
                    return Err(self.expected("GRACE PERIOD or RETENTION"));
                }
            }
            self.expect_token(Token::RParen, "`,` or `)`")?;
            Ok(WindowSpec::Session { gap, grace })
        } else {
            Err(self.expected("TUMBLING, HOPPING or SESSION"))
        }
    }

    fn named_source(&mut self) -> Result<NamedSource> {
        let name = self.name("a stream or table name")?;
        let alias = self.alias()?;
        Ok(NamedSource { name, alias })
    }

    /// `AS name`, or a name that is not a clause word (an implicit alias).
    fn alias(&mut self) -> Result<Option<Name>> {
        let implicit = matches!(self.peek(), Token::Word(ref w) if w.quote_style.is_some()
            || !RESERVED.contains(&w.value.to_ascii_uppercase().as_str()));
        if self.kw("AS") || implicit {
            Ok(Some(self.name("an alias")?))
        } else {
            Ok(None)
        }
    }

    fn expr_list(&mut self) -> Result<Vec<AstExpr>> {
        let mut v = vec![self.expr()?];
        while self.p.consume_token(&Token::Comma) {
            v.push(self.expr()?);
        }
        Ok(v)
    }

    fn select(&mut self) -> Result<Select> {
        self.expect_kw("SELECT")?;
        let mut items = Vec::new();
        loop {
            if self.p.consume_token(&Token::Mul) {
                items.push(SelectItem::Wildcard);
            } else if matches!(self.peek(), Token::Word(_))
                && self.p.peek_nth_token(1).token == Token::Period
                && self.p.peek_nth_token(2).token == Token::Mul
            {
                let n = self.name("a source name")?;
                self.p.next_token();
                self.p.next_token();
                items.push(SelectItem::QualifiedWildcard(n));
            } else {
                let expr = self.expr()?;
                let alias = self.alias()?;
                items.push(SelectItem::Expr {
                    expr: Box::new(expr),
                    alias,
                });
            }
            if !self.p.consume_token(&Token::Comma) {
                break;
            }
        }
        if !self.kw("FROM") {
            return Err(self.expected("`,` or FROM"));
        }
        let from = self.named_source()?;
        let mut joins = Vec::new();
        loop {
            let kind = if self.kw("JOIN") {
                JoinKind::Inner
            } else if self.kw("INNER") {
                self.expect_kw("JOIN")?;
                JoinKind::Inner
            } else if self.kw("LEFT") {
                self.kw("OUTER");
                self.expect_kw("JOIN")?;
                JoinKind::Left
            } else if self.kw("RIGHT") {
                self.kw("OUTER");
                self.expect_kw("JOIN")?;
                JoinKind::Right
            } else if self.kw("FULL") {
                self.kw("OUTER");
                self.expect_kw("JOIN")?;
                JoinKind::Full
            } else {
                break;
            };
            let source = self.named_source()?;
            let mut within = None;
            let mut grace = None;
            if self.kw("WITHIN") {
                if self.p.consume_token(&Token::LParen) {
                    let before = self.duration()?;
                    self.expect_token(Token::Comma, "`,` and the time after")?;
                    let after = self.duration()?;
                    self.expect_token(Token::RParen, "`)`")?;
                    within = Some((before, after));
                } else {
                    let d = self.duration()?;
                    within = Some((d, d));
                }
                grace = self.grace()?;
            }
            self.expect_kw("ON")?;
            let on = self.expr()?;
            joins.push(Join {
                kind,
                source,
                within,
                grace,
                on,
            });
        }
        let window = if self.kw("WINDOW") {
            Some(self.window()?)
        } else {
            None
        };
        let filter = if self.kw("WHERE") {
            Some(self.expr()?)
        } else {
            None
        };
        let mut group_by = Vec::new();
        let mut partition_by = Vec::new();
        let mut having = None;
        if self.kws(&["GROUP", "BY"]) {
            group_by = self.expr_list()?;
        }
        if self.kws(&["PARTITION", "BY"]) {
            partition_by = self.expr_list()?;
        }
        if self.kw("HAVING") {
            having = Some(self.expr()?);
        }
        let emit = if self.kw("EMIT") {
            if self.kw("CHANGES") {
                Some(Emit::Changes)
            } else if self.kw("FINAL") {
                Some(Emit::Final)
            } else {
                return Err(self.expected("CHANGES or FINAL"));
            }
        } else {
            None
        };
        let limit = if self.kw("LIMIT") {
            Some(self.uint("a row count")?)
        } else {
            None
        };
        if let Token::Word(w) = self.peek() {
            let u = w.value.to_ascii_uppercase();
            if [
                "WINDOW",
                "WHERE",
                "GROUP",
                "PARTITION",
                "HAVING",
                "EMIT",
                "LIMIT",
            ]
            .contains(&u.as_str())
            {
                return Err(self.expected(
                    "the end of the statement: the clauses go in the order WINDOW, WHERE, GROUP BY, PARTITION BY, HAVING, EMIT, LIMIT",
                ));
            }
        }
        Ok(Select {
            items,
            from,
            joins,
            window,
            filter,
            group_by,
            partition_by,
            having,
            emit,
            limit,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(sql: &str) -> SqlError {
        parse_script(sql).expect_err(sql)
    }

    #[test]
    fn create_stream_with_columns_and_properties() {
        let p = parse_statement(
            "CREATE STREAM pageviews (viewtime BIGINT, user_id VARCHAR KEY, page STRUCT<url STRING, tags ARRAY<ARRAY<STRING>>>) \
             WITH (kafka_topic='pageviews', value_format='JSON', partitions=3);",
        )
        .unwrap();
        let Statement::CreateSource {
            kind,
            name,
            columns,
            with,
            as_select,
            ..
        } = p.statement
        else {
            panic!("not a CREATE: {p:?}")
        };
        assert_eq!(kind, SourceKind::Stream);
        assert_eq!(name.value, "PAGEVIEWS");
        assert_eq!(columns.len(), 3);
        assert_eq!(columns[1].key, KeyKind::Key);
        assert_eq!(
            columns[2].ty,
            SqlType::Struct(vec![
                ("URL".into(), SqlType::String),
                (
                    "TAGS".into(),
                    SqlType::Array(Box::new(SqlType::Array(Box::new(SqlType::String))))
                )
            ])
        );
        assert_eq!(with[0].name, "KAFKA_TOPIC");
        assert_eq!(with[0].value, PropValue::String("pageviews".into()));
        assert_eq!(with[2].value, PropValue::Number("3".into()));
        assert!(as_select.is_none());
        assert!(p.text.starts_with("CREATE STREAM pageviews"));
        assert!(p.text.ends_with("partitions=3)"));
    }

    #[test]
    fn windowed_aggregate_with_emit_final() {
        let p = parse_statement(
            "CREATE TABLE counts AS SELECT user_id, COUNT(*) AS n FROM clicks \
             WINDOW TUMBLING (SIZE 1 MINUTE, GRACE PERIOD 10 SECONDS) WHERE page <> 'x' GROUP BY user_id HAVING COUNT(*) > 1 EMIT FINAL",
        )
        .unwrap();
        let Statement::CreateSource {
            as_select: Some(s),
            kind: SourceKind::Table,
            ..
        } = p.statement
        else {
            panic!()
        };
        assert_eq!(
            s.window,
            Some(WindowSpec::Tumbling {
                size: 60_000,
                grace: Some(10_000)
            })
        );
        assert_eq!(s.emit, Some(Emit::Final));
        assert_eq!(s.group_by.len(), 1);
        assert!(s.having.is_some());
        let p = parse_statement("SELECT * FROM s WINDOW HOPPING (SIZE 5 MINUTES, ADVANCE BY 1 MINUTE) EMIT CHANGES LIMIT 3").unwrap();
        let Statement::Select(s) = p.statement else {
            panic!()
        };
        assert_eq!(
            s.window,
            Some(WindowSpec::Hopping {
                size: 300_000,
                advance: 60_000,
                grace: None
            })
        );
        assert_eq!(s.limit, Some(3));
        let p = parse_statement(
            "SELECT k, COUNT(*) FROM s WINDOW SESSION (30 SECONDS) GROUP BY k EMIT CHANGES",
        )
        .unwrap();
        let Statement::Select(s) = p.statement else {
            panic!()
        };
        assert_eq!(
            s.window,
            Some(WindowSpec::Session {
                gap: 30_000,
                grace: None
            })
        );
    }

    #[test]
    fn joins_and_other_statements_parse() {
        let p = parse_statement(
            "SELECT o.id, c.name FROM orders o LEFT JOIN customers c WITHIN 1 HOUR GRACE PERIOD 5 MINUTES ON o.cid = c.id EMIT CHANGES",
        )
        .unwrap();
        let Statement::Select(s) = p.statement else {
            panic!()
        };
        assert_eq!(s.from.alias.as_ref().unwrap().value, "O");
        assert_eq!(s.joins[0].kind, JoinKind::Left);
        assert_eq!(s.joins[0].within, Some((3_600_000, 3_600_000)));
        let all = parse_script(
            "SHOW STREAMS; LIST TABLES; SHOW QUERIES; DESCRIBE s; DESCRIBE EXTENDED s; DROP STREAM IF EXISTS s DELETE TOPIC; \
             TERMINATE CSAS_X_1; TERMINATE ALL; EXPLAIN CSAS_X_1; EXPLAIN SELECT * FROM s EMIT CHANGES; \
             ALTER STREAM s ADD COLUMN c INT, ADD d STRING; INSERT INTO s (a, b) VALUES ('x', 1 + 2); \
             SET 'auto.offset.reset' = 'earliest'; CREATE OR REPLACE STREAM t AS SELECT a FROM s;",
        )
        .unwrap();
        assert_eq!(all.len(), 14);
        assert_eq!(
            all[5].statement,
            Statement::Drop {
                kind: SourceKind::Stream,
                if_exists: true,
                name: Name {
                    value: "S".into(),
                    pos: Some(Pos::new(1, 97))
                },
                delete_topic: true
            }
        );
        assert_eq!(all[5].text, "DROP STREAM IF EXISTS s DELETE TOPIC");
        assert!(
            matches!(&all[10].statement, Statement::AlterAddColumns { columns, .. } if columns.len() == 2)
        );
        assert!(matches!(
            &all[13].statement,
            Statement::CreateSource {
                or_replace: true,
                ..
            }
        ));
    }

    #[test]
    fn quoted_identifiers_keep_their_case() {
        let p = parse_statement(
            "CREATE STREAM `MixedCase` (`col` INT) WITH (kafka_topic='t', value_format='JSON')",
        )
        .unwrap();
        let Statement::CreateSource { name, columns, .. } = p.statement else {
            panic!()
        };
        assert_eq!(name.value, "MixedCase");
        assert_eq!(columns[0].name.value, "col");
    }

    #[test]
    fn errors_name_line_column_and_what_was_expected() {
        let e = err("SELECT *\n  FROMM s;");
        assert_eq!(e.pos, Some(Pos::new(2, 3)), "{e}");
        assert!(
            e.message.contains("expected `,` or FROM, found `FROMM`"),
            "{e}"
        );
        assert_eq!(e.snippet.as_deref(), Some("  FROMM s;\n  ^"));
        assert_eq!(
            e.to_string(),
            "line 2, column 3: expected `,` or FROM, found `FROMM`\n  FROMM s;\n  ^"
        );

        let e = err("SELECT a, b,\nFROM s;");
        assert_eq!(e.pos, Some(Pos::new(2, 1)), "{e}");
        assert!(
            e.message.contains("expected an expression, found `FROM`"),
            "{e}"
        );

        let e = err("CREATE STREAM s (a INT, b FLOTE) WITH (kafka_topic='t');");
        assert_eq!(e.pos, Some(Pos::new(1, 27)), "{e}");
        assert!(e.message.contains("expected a type"), "{e}");
        assert_eq!(e.snippet.as_deref(), Some("CREATE STREAM s (a INT, b FLOTE) WITH (kafka_topic='t');\n                          ^"));

        let e = err("SELECT * FROM s WINDOW TUMBLING (SIZE 1 FORTNIGHT) EMIT CHANGES;");
        assert_eq!(e.pos, Some(Pos::new(1, 41)), "{e}");
        assert!(e.message.contains("a time unit"), "{e}");

        let e = err("SELECT * FROM s EMIT SOMETIMES;");
        assert!(
            e.message
                .contains("expected CHANGES or FINAL, found `SOMETIMES`"),
            "{e}"
        );
        assert_eq!(e.pos, Some(Pos::new(1, 22)));

        let e = err("SHOW STREAMS;\n  SELECT a + FROM s;");
        assert_eq!(e.pos.map(|p| p.line), Some(2), "{e}");

        let e = err("SELECT 'unterminated FROM s");
        assert!(e.pos.is_some(), "{e}");
        assert!(e.to_string().contains("line 1"), "{e}");

        let e = err("SELECT * FROM s WHERE a > 1 WINDOW TUMBLING (SIZE 1 SECOND)");
        assert!(e.message.contains("clauses go in the order"), "{e}");

        let e = err("DELETE FROM s");
        assert!(e.message.contains("expected a statement"), "{e}");
        assert_eq!(e.pos, Some(Pos::new(1, 1)));
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let sql = format!("SELECT {}1{} FROM s", "(".repeat(5000), ")".repeat(5000));
        let e = err(&sql);
        assert!(e.message.contains("nested too deeply"), "{e}");
        let sql = format!(
            "CREATE STREAM s (a {}INT{}) WITH (kafka_topic='t')",
            "ARRAY<".repeat(5000),
            ">".repeat(5000)
        );
        let e = err(&sql);
        assert!(e.message.contains("nested too deeply"), "{e}");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]
        /// Random text never panics the parser.
        #[test]
        fn random_text_never_panics(s in "\\PC{0,200}") {
            let _ = parse_script(&s);
        }

        /// Valid statements cut, spliced and mutated never panic the parser; errors carry a position inside the text.
        #[test]
        fn mutated_statements_never_panic(idx in 0usize..8, cut in 0usize..400, ins in "[ ,();'`<>=*.a-zA-Z0-9\n]{0,6}") {
            let samples = [
                "CREATE STREAM s (a INT KEY, b STRUCT<x ARRAY<MAP<STRING, INT>>>) WITH (kafka_topic='t', value_format='JSON', partitions=2);",
                "CREATE TABLE t AS SELECT k, COUNT(*) FROM s WINDOW TUMBLING (SIZE 1 MINUTE, GRACE PERIOD 2 SECONDS) GROUP BY k EMIT FINAL;",
                "SELECT UCASE(a) AS u, CASE WHEN b > 1 THEN 'x' ELSE 'y' END FROM s WHERE a LIKE 'x%' EMIT CHANGES LIMIT 5;",
                "INSERT INTO s (a, b) VALUES (1, 'two');",
                "SELECT a.x, b.y FROM a JOIN b WITHIN (1 SECOND, 2 SECONDS) ON a.k = b.k EMIT CHANGES;",
                "DROP TABLE IF EXISTS t DELETE TOPIC; TERMINATE ALL; SHOW QUERIES;",
                "ALTER STREAM s ADD COLUMN c DECIMAL(10, 2);",
                "EXPLAIN SELECT CAST(a AS STRING) FROM s WINDOW SESSION (5 MINUTES) GROUP BY a;",
            ];
            let s = samples[idx];
            let mut at = cut.min(s.len());
            while !s.is_char_boundary(at) { at -= 1; }
            let mutated = format!("{}{}{}", &s[..at], ins, &s[at..]);
            let truncated = &s[..at];
            for text in [mutated.as_str(), truncated] {
                if let Err(e) = parse_script(text) {
                    if let Some(p) = e.pos {
                        let lines = text.lines().count().max(1) as u64;
                        proptest::prop_assert!(p.line >= 1 && p.line <= lines + 1, "{e} in {text:?}");
                    }
                }
            }
        }
    }
}
