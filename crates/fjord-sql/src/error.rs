//! Errors of the SQL layer. Every error a user can cause carries a stable code (ksqlDB's where one exists) and,
//! when it is about a place in the statement, the line and column and the line of source with a caret.

use std::fmt;

/// Where in the request text (1-based line and column, in characters).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Pos {
    pub line: u64,
    pub column: u64,
}

impl Pos {
    pub fn new(line: u64, column: u64) -> Pos {
        Pos { line, column }
    }

    pub fn from_location(l: sqlparser::tokenizer::Location) -> Option<Pos> {
        (l.line > 0).then(|| Pos::new(l.line, l.column.max(1)))
    }
}

/// What kind of failure; the REST API maps each to an HTTP status and ksqlDB's error code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The text is not a statement we can parse.
    Syntax,
    /// Parsed, but wrong: an unknown stream or column, a type mismatch, a name that exists already.
    Semantic,
    /// Valid, but this version cannot run it yet.
    NotSupported,
    /// The cluster refused or could not be reached; the statement may be retried.
    Execution,
}

#[derive(Clone, Debug, PartialEq)]
pub struct SqlError {
    pub kind: ErrorKind,
    pub message: String,
    pub pos: Option<Pos>,
    /// The line of source with a caret under `pos` (filled in by [`SqlError::with_source`]).
    pub snippet: Option<String>,
}

pub type Result<T, E = SqlError> = std::result::Result<T, E>;

impl SqlError {
    pub fn syntax(message: impl Into<String>, pos: Option<Pos>) -> SqlError {
        SqlError {
            kind: ErrorKind::Syntax,
            message: message.into(),
            pos,
            snippet: None,
        }
    }

    pub fn semantic(message: impl Into<String>) -> SqlError {
        SqlError {
            kind: ErrorKind::Semantic,
            message: message.into(),
            pos: None,
            snippet: None,
        }
    }

    pub fn semantic_at(message: impl Into<String>, pos: Option<Pos>) -> SqlError {
        SqlError {
            pos,
            ..SqlError::semantic(message)
        }
    }

    pub fn not_supported(message: impl Into<String>) -> SqlError {
        SqlError {
            kind: ErrorKind::NotSupported,
            message: format!("not supported yet: {}", message.into()),
            pos: None,
            snippet: None,
        }
    }

    pub fn execution(message: impl Into<String>) -> SqlError {
        SqlError {
            kind: ErrorKind::Execution,
            message: message.into(),
            pos: None,
            snippet: None,
        }
    }

    /// Adds the source line and a caret under the position (when there is one and it is inside `source`).
    pub fn with_source(mut self, source: &str) -> SqlError {
        if let Some(pos) = self.pos {
            if let Some(line) = source.lines().nth(pos.line.saturating_sub(1) as usize) {
                let col = pos.column.saturating_sub(1) as usize;
                // The caret sits under the same character: tabs are kept so that the terminal aligns them alike.
                let pad: String = line
                    .chars()
                    .take(col)
                    .map(|c| if c == '\t' { '\t' } else { ' ' })
                    .collect();
                self.snippet = Some(format!("{line}\n{pad}^"));
            }
        }
        self
    }

    /// ksqlDB's error code for this kind of failure (40001: bad statement; 50000: server error).
    pub fn error_code(&self) -> u32 {
        match self.kind {
            ErrorKind::Syntax | ErrorKind::Semantic | ErrorKind::NotSupported => 40001,
            ErrorKind::Execution => 50000,
        }
    }
}

impl fmt::Display for SqlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(p) = self.pos {
            write!(f, "line {}, column {}: ", p.line, p.column)?;
        }
        write!(f, "{}", self.message)?;
        if let Some(s) = &self.snippet {
            write!(f, "\n{s}")?;
        }
        Ok(())
    }
}

impl std::error::Error for SqlError {}

/// sqlparser reports positions inside its message (`... at Line: 3, Column: 7`); this takes them out.
pub fn from_sqlparser(e: &sqlparser::parser::ParserError, fallback: Option<Pos>) -> SqlError {
    use sqlparser::parser::ParserError;
    let text = match e {
        ParserError::TokenizerError(s) | ParserError::ParserError(s) => s.clone(),
        ParserError::RecursionLimitExceeded => {
            return SqlError::syntax(
                "the expression is nested too deeply (at most 50 levels)",
                fallback,
            )
        }
    };
    match text.rfind(" at Line: ") {
        Some(i) => {
            let loc = &text[i + " at Line: ".len()..];
            let mut parts = loc.split(", Column: ");
            let line = parts.next().and_then(|l| l.trim().parse().ok());
            let col = parts.next().and_then(|c| c.trim().parse().ok());
            match (line, col) {
                (Some(l), Some(c)) => SqlError::syntax(&text[..i], Some(Pos::new(l, c))),
                _ => SqlError::syntax(text, fallback),
            }
        }
        None => SqlError::syntax(text, fallback),
    }
}
