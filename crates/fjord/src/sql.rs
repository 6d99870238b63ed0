//! `fjord sql`: the SQL shell and script runner, a client of the SQL server's REST API (ksqlDB's `/ksql` and
//! `/query`), and `fjord sql-server`, the server alone against any Kafka-compatible cluster. Statements are parsed
//! here first, so that a syntax error points at the line and column of the file or the shell input; SET and UNSET
//! are kept in the session and sent with each statement as `streamsProperties`.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use fjord_sql::parser::{parse_script, Parsed, Statement};
use serde_json::{json, Value as J};

use crate::client::CliError;

#[derive(Args)]
pub struct SqlArgs {
    /// The SQL server (`fjord start` runs one; `fjord sql-server` runs one alone). Default $FJORD_SQL_SERVER or
    /// http://127.0.0.1:8088.
    #[arg(long, value_name = "http://HOST:PORT")]
    server: Option<String>,
    /// Run the statements of FILE and exit (the first error stops it, exit status 1).
    #[arg(long, short = 'f', value_name = "FILE", conflicts_with = "execute")]
    file: Option<std::path::PathBuf>,
    /// Run these statements and exit.
    #[arg(long, short = 'e', value_name = "SQL")]
    execute: Option<String>,
    /// Print results as tables (default) or as the server's JSON.
    #[arg(long, value_name = "table|json", default_value = "table")]
    output: String,
}

/// `host:port` of `http://host:port[/]`.
fn authority(url: &str) -> Result<String, CliError> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| CliError::new(2, format!("--server {url}: expected http://HOST:PORT")))?;
    let a = rest.trim_end_matches('/');
    if a.is_empty() || a.contains('/') {
        return Err(CliError::new(
            2,
            format!("--server {url}: expected http://HOST:PORT"),
        ));
    }
    Ok(a.to_string())
}

pub fn run(args: SqlArgs) -> Result<(), CliError> {
    let server = args
        .server
        .clone()
        .or_else(|| std::env::var("FJORD_SQL_SERVER").ok())
        .unwrap_or_else(|| "http://127.0.0.1:8088".into());
    let json_out = match args.output.as_str() {
        "table" => false,
        "json" => true,
        o => {
            return Err(CliError::new(
                2,
                format!("--output {o}: expected table or json"),
            ))
        }
    };
    let mut session = Session {
        http: Http::new(authority(&server)?)?,
        props: BTreeMap::new(),
        json_out,
        interrupt: interrupt_flag()?,
    };
    if let Some(path) = &args.file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| CliError::failure(format!("cannot read {}: {e}", path.display())))?;
        return session.run_text(&text);
    }
    if let Some(text) = &args.execute {
        return session.run_text(text);
    }
    session.shell()
}

/// SIGINT sets the flag (a running push query stops; the shell goes on) instead of ending the process.
fn interrupt_flag() -> Result<Arc<AtomicBool>, CliError> {
    use tokio::signal::unix::{signal, SignalKind};
    let flag = Arc::new(AtomicBool::new(false));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::failure(format!("cannot start the async runtime: {e}")))?;
    let mut int = rt
        .block_on(async { signal(SignalKind::interrupt()) })
        .map_err(|e| CliError::failure(format!("cannot watch for signals: {e}")))?;
    let set = flag.clone();
    std::thread::spawn(move || {
        rt.block_on(async {
            while int.recv().await.is_some() {
                set.store(true, Ordering::SeqCst);
            }
        })
    });
    Ok(flag)
}

struct Session {
    http: Http,
    props: BTreeMap<String, String>,
    json_out: bool,
    interrupt: Arc<AtomicBool>,
}

impl Session {
    /// Parses and runs every statement of `text`; the first failure ends it.
    fn run_text(&mut self, text: &str) -> Result<(), CliError> {
        let statements = parse_script(text).map_err(|e| CliError::failure(e.to_string()))?;
        for st in &statements {
            self.run_statement(st)?;
        }
        Ok(())
    }

    fn run_statement(&mut self, st: &Parsed) -> Result<(), CliError> {
        match &st.statement {
            Statement::Set { name, value } => {
                self.props.insert(name.clone(), value.clone());
                println!("Successfully changed local property '{name}' to '{value}'.");
                Ok(())
            }
            Statement::Unset { name } => {
                self.props.remove(name);
                println!("Successfully unset local property '{name}'.");
                Ok(())
            }
            Statement::Select(_) => self.push_query(&st.text),
            _ => {
                let body =
                    json!({"ksql": format!("{};", st.text), "streamsProperties": self.props});
                let (status, v) = self.http.request("/ksql", &body)?;
                if status != 200 {
                    return Err(CliError::failure(error_text(&v)));
                }
                for e in v.as_array().into_iter().flatten() {
                    if self.json_out {
                        println!("{e}");
                    } else {
                        print_entity(e);
                    }
                }
                Ok(())
            }
        }
    }

    fn push_query(&mut self, text: &str) -> Result<(), CliError> {
        self.interrupt.store(false, Ordering::SeqCst);
        let body = json!({"ksql": format!("{text};"), "streamsProperties": self.props});
        let mut widths: Vec<usize> = Vec::new();
        let json_out = self.json_out;
        let mut rows = 0u64;
        let mut failure = None;
        self.http.stream("/query", &body, &self.interrupt, |el| {
            if json_out {
                println!("{el}");
            } else if let Some(h) = el.get("header") {
                let names = schema_names(h["schema"].as_str().unwrap_or(""));
                widths = names.iter().map(|n| n.len().max(12)).collect();
                print_rule(&widths);
                print_cells(&names, &widths);
                print_rule(&widths);
            } else if let Some(r) = el.get("row") {
                let cells: Vec<String> = r["columns"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(cell)
                    .collect();
                print_cells(&cells, &widths);
            } else if let Some(e) = el.get("errorMessage") {
                failure = Some(
                    e["message"]
                        .as_str()
                        .unwrap_or("the query failed")
                        .to_string(),
                );
            }
            if el.get("row").is_some() {
                rows += 1;
            }
            let _ = std::io::stdout().flush();
        })?;
        if !json_out && !widths.is_empty() {
            print_rule(&widths);
        }
        if self.interrupt.swap(false, Ordering::SeqCst) {
            eprintln!("Query terminated ({rows} rows)");
        }
        match failure {
            Some(f) => Err(CliError::failure(f)),
            None => Ok(()),
        }
    }

    /// The names of the streams and tables, for tab completion (empty when the server cannot say).
    fn source_names(&self) -> Vec<String> {
        let body = json!({"ksql": "SHOW STREAMS; SHOW TABLES;"});
        match self.http.request("/ksql", &body) {
            Ok((200, v)) => v
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|e| {
                    ["streams", "tables"]
                        .iter()
                        .flat_map(|f| e[*f].as_array().cloned().unwrap_or_default())
                        .collect::<Vec<_>>()
                })
                .filter_map(|x| x["name"].as_str().map(str::to_string))
                .collect(),
            _ => Vec::new(),
        }
    }

    fn shell(&mut self) -> Result<(), CliError> {
        use rustyline::error::ReadlineError;
        let mut rl: rustyline::Editor<SqlHelper, rustyline::history::DefaultHistory> =
            rustyline::Editor::new()
                .map_err(|e| CliError::failure(format!("cannot open the terminal: {e}")))?;
        rl.set_helper(Some(SqlHelper {
            names: self.source_names(),
        }));
        let history = std::env::var_os("HOME")
            .map(|h| std::path::PathBuf::from(h).join(".fjord_sql_history"));
        if let Some(h) = &history {
            let _ = rl.load_history(h);
        }
        eprintln!("Fjord SQL on http://{} (statements end with `;`, Ctrl-D to quit, Ctrl-C stops a push query)", self.http.addr);
        let mut buf = String::new();
        loop {
            let prompt = if buf.is_empty() { "fjord> " } else { "   ... " };
            match rl.readline(prompt) {
                Ok(line) => {
                    let t = line.trim();
                    if buf.is_empty()
                        && (t.eq_ignore_ascii_case("exit") || t.eq_ignore_ascii_case("quit"))
                    {
                        break;
                    }
                    if !buf.is_empty() {
                        buf.push('\n');
                    }
                    buf.push_str(&line);
                    if !buf.trim_end().ends_with(';') {
                        continue;
                    }
                    let _ = rl.add_history_entry(buf.as_str());
                    let text = std::mem::take(&mut buf);
                    if let Err(e) = self.run_text(&text) {
                        eprintln!("{}", e.message);
                    }
                    let names = self.source_names();
                    if let Some(h) = rl.helper_mut() {
                        h.names = names;
                    }
                }
                Err(ReadlineError::Interrupted) => buf.clear(),
                Err(ReadlineError::Eof) => break,
                Err(e) => return Err(CliError::failure(format!("cannot read the terminal: {e}"))),
            }
        }
        if let Some(h) = &history {
            let _ = rl.save_history(h);
        }
        Ok(())
    }
}

/// Words the shell completes with Tab, besides the names of streams and tables.
const KEYWORDS: &[&str] = &[
    "SELECT",
    "FROM",
    "WHERE",
    "GROUP",
    "BY",
    "HAVING",
    "WINDOW",
    "TUMBLING",
    "HOPPING",
    "SESSION",
    "SIZE",
    "ADVANCE",
    "GRACE",
    "PERIOD",
    "EMIT",
    "CHANGES",
    "FINAL",
    "LIMIT",
    "CREATE",
    "STREAM",
    "TABLE",
    "AS",
    "WITH",
    "KAFKA_TOPIC",
    "VALUE_FORMAT",
    "KEY_FORMAT",
    "PARTITIONS",
    "TIMESTAMP",
    "INSERT",
    "INTO",
    "VALUES",
    "SHOW",
    "STREAMS",
    "TABLES",
    "QUERIES",
    "TOPICS",
    "DESCRIBE",
    "EXTENDED",
    "DROP",
    "DELETE",
    "TOPIC",
    "TERMINATE",
    "EXPLAIN",
    "ALTER",
    "ADD",
    "COLUMN",
    "SET",
    "UNSET",
    "JOIN",
    "LEFT",
    "ON",
    "WITHIN",
    "AND",
    "OR",
    "NOT",
    "NULL",
    "CASE",
    "WHEN",
    "THEN",
    "ELSE",
    "END",
    "CAST",
    "KEY",
    "PRIMARY",
    "REPLACE",
    "IF",
    "EXISTS",
    "STRING",
    "INT",
    "BIGINT",
    "DOUBLE",
    "BOOLEAN",
    "ARRAY",
    "MAP",
    "STRUCT",
    "UCASE",
    "LCASE",
    "SUBSTRING",
    "CONCAT",
    "COALESCE",
    "IFNULL",
    "TIMESTAMPTOSTRING",
    "STRINGTOTIMESTAMP",
    "EXTRACTJSONFIELD",
    "COUNT",
    "SUM",
    "AVG",
    "MIN",
    "MAX",
    "MINUTE",
    "MINUTES",
    "SECOND",
    "SECONDS",
    "HOUR",
    "HOURS",
    "DAY",
    "DAYS",
];

/// Completes the word before the cursor with a keyword or a stream or table name, in the case it was typed in.
fn completions(line: &str, pos: usize, names: &[String]) -> (usize, Vec<String>) {
    let pos = pos.min(line.len());
    let before = &line[..pos];
    let start = before
        .char_indices()
        .rev()
        .find(|(_, c)| !(c.is_alphanumeric() || *c == '_'))
        .map_or(0, |(i, c)| i + c.len_utf8());
    let word = &before[start..];
    if word.is_empty() {
        return (start, Vec::new());
    }
    let lower = word.chars().all(|c| !c.is_uppercase());
    let mut out: Vec<String> = KEYWORDS
        .iter()
        .map(|k| k.to_string())
        .chain(names.iter().cloned())
        .filter(|k| k.len() > word.len() && k.to_uppercase().starts_with(&word.to_uppercase()))
        .map(|k| if lower { k.to_lowercase() } else { k })
        .collect();
    out.sort();
    out.dedup();
    (start, out)
}

/// The shell's line editor helper: Tab completion only.
struct SqlHelper {
    names: Vec<String>,
}

impl rustyline::completion::Completer for SqlHelper {
    type Candidate = String;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &rustyline::Context<'_>,
    ) -> rustyline::Result<(usize, Vec<String>)> {
        Ok(completions(line, pos, &self.names))
    }
}

impl rustyline::hint::Hinter for SqlHelper {
    type Hint = String;
}

impl rustyline::highlight::Highlighter for SqlHelper {}

impl rustyline::validate::Validator for SqlHelper {}

impl rustyline::Helper for SqlHelper {}

fn error_text(v: &J) -> String {
    v.get("message")
        .and_then(J::as_str)
        .map_or_else(|| v.to_string(), str::to_string)
}

/// `` `A` STRING KEY, `B` INTEGER `` to its names.
fn schema_names(schema: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = schema;
    while let Some(start) = rest.find('`') {
        let after = &rest[start + 1..];
        let Some(end) = after.find('`') else { break };
        names.push(after[..end].to_string());
        // Skip to the next top-level comma (types such as STRUCT<`X` INT> hold backticks too).
        let tail = &after[end + 1..];
        let mut depth = 0i32;
        let mut cut = tail.len();
        for (i, c) in tail.char_indices() {
            match c {
                '<' => depth += 1,
                '>' => depth -= 1,
                ',' if depth == 0 => {
                    cut = i + 1;
                    break;
                }
                _ => {}
            }
        }
        rest = &tail[cut..];
    }
    names
}

fn cell(v: &J) -> String {
    match v {
        J::String(s) => s.clone(),
        J::Null => "null".into(),
        other => other.to_string(),
    }
}

fn print_rule(widths: &[usize]) {
    let mut s = String::from("+");
    for w in widths {
        s.push_str(&"-".repeat(w + 2));
        s.push('+');
    }
    println!("{s}");
}

fn print_cells(cells: &[String], widths: &[usize]) {
    let mut s = String::from("|");
    for (i, c) in cells.iter().enumerate() {
        let w = widths.get(i).copied().unwrap_or(12);
        s.push_str(&format!(" {c:<w$} |"));
    }
    println!("{s}");
}

fn print_table(head: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = head.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(c.chars().count());
            }
        }
    }
    print_rule(&widths);
    print_cells(
        &head.iter().map(|h| h.to_string()).collect::<Vec<_>>(),
        &widths,
    );
    print_rule(&widths);
    for r in rows {
        print_cells(&r, &widths);
    }
    print_rule(&widths);
}

fn s(v: &J) -> String {
    cell(v)
}

/// The reasons of the entries the server lists as BROKEN (a definition it could not read back).
fn print_broken(list: &J) {
    for x in list.as_array().into_iter().flatten() {
        // A query that is failing (ERROR) says why, as a broken command does.
        if (x["state"] == "BROKEN" || x["state"] == "ERROR") && !x["reason"].is_null() {
            let name = x.get("id").unwrap_or(&x["name"]);
            println!("{} {}: {}", s(&x["state"]), s(name), s(&x["reason"]));
        }
    }
}

fn print_entity(e: &J) {
    match e["@type"].as_str().unwrap_or("") {
        "streams" | "tables" => {
            let field = if e["@type"] == "streams" {
                "streams"
            } else {
                "tables"
            };
            let rows = e[field]
                .as_array()
                .into_iter()
                .flatten()
                .map(|x| {
                    vec![
                        s(&x["name"]),
                        s(&x["topic"]),
                        s(&x["keyFormat"]),
                        s(&x["valueFormat"]),
                    ]
                })
                .collect();
            print_table(
                &[
                    if field == "streams" {
                        "Stream Name"
                    } else {
                        "Table Name"
                    },
                    "Kafka Topic",
                    "Key Format",
                    "Value Format",
                ],
                rows,
            );
            print_broken(&e[field]);
        }
        "queries" => {
            let rows = e["queries"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|x| {
                    vec![
                        s(&x["id"]),
                        s(&x["state"]),
                        s(&x["sinks"][0]),
                        s(&x["sinkKafkaTopics"][0]),
                        s(&x["queryString"]),
                    ]
                })
                .collect();
            print_table(
                &[
                    "Query ID",
                    "Status",
                    "Sink Name",
                    "Sink Kafka Topic",
                    "Query String",
                ],
                rows,
            );
            print_broken(&e["queries"]);
        }
        "kafka_topics" => {
            let rows = e["topics"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|x| {
                    vec![
                        s(&x["name"]),
                        x["replicaInfo"].as_array().map_or(0, Vec::len).to_string(),
                    ]
                })
                .collect();
            print_table(&["Kafka Topic", "Partitions"], rows);
        }
        "properties" => {
            let rows = e["properties"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|x| vec![s(&x["name"]), s(&x["value"])])
                .collect();
            print_table(&["Property", "Value"], rows);
        }
        "sourceDescription" => {
            let d = &e["sourceDescription"];
            println!("Name                 : {}", s(&d["name"]));
            println!("Type                 : {}", s(&d["type"]));
            println!(
                "Kafka topic          : {} (key format: {}, value format: {})",
                s(&d["topic"]),
                s(&d["keyFormat"]),
                s(&d["valueFormat"])
            );
            let rows = d["fields"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|f| {
                    vec![
                        s(&f["name"]),
                        format!(
                            "{}{}",
                            s(&f["schema"]["type"]),
                            f.get("type")
                                .map(|t| format!(" ({})", s(t)))
                                .unwrap_or_default()
                        ),
                    ]
                })
                .collect();
            print_table(&["Field", "Type"], rows);
            for q in d["writeQueries"].as_array().into_iter().flatten() {
                println!(
                    "Written by query {} ({}): {}",
                    s(&q["id"]),
                    s(&q["state"]),
                    s(&q["queryString"])
                );
            }
            for q in d["readQueries"].as_array().into_iter().flatten() {
                println!("Read by query {}", s(&q["id"]));
            }
            if let Some(st) = d.get("statistics").filter(|v| !v.is_null()) {
                println!("Statistics           : {st}");
            }
        }
        "queryDescription" => {
            let d = &e["queryDescription"];
            if !s(&d["id"]).is_empty() {
                println!("ID                   : {}", s(&d["id"]));
                println!("Status               : {}", s(&d["state"]));
            }
            println!("Statement            : {}", s(&d["statementText"]));
            let rows = d["fields"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|f| vec![s(&f["name"]), s(&f["schema"]["type"])])
                .collect();
            print_table(&["Field", "Type"], rows);
            println!("Execution plan:\n{}", s(&d["executionPlan"]));
            if let Some(r) = d.get("reason").and_then(J::as_str) {
                println!("Cannot run yet: {r}");
            }
            for e in d["queryErrors"].as_array().into_iter().flatten() {
                println!("Error                : {}", s(&e["errorMessage"]));
            }
            if let Some(st) = d.get("statistics").filter(|v| !v.is_null()) {
                println!("Statistics           : {st}");
            }
        }
        _ => {
            let msg = e["commandStatus"]["message"]
                .as_str()
                .map_or_else(|| e.to_string(), str::to_string);
            println!("{msg}");
        }
    }
}

/// The most the command line keeps of one answer (a whole answer, or one row of a streamed one).
const MAX_ANSWER_BYTES: usize = 64 << 20;

/// How long a statement's answer may take.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(120);

fn too_large(limit: usize) -> CliError {
    CliError::new(
        3,
        format!(
            "the SQL server's answer is larger than {} MiB; is it a Fjord SQL server?",
            (limit >> 20).max(1)
        ),
    )
}

/// The client of the SQL server's REST API: hyper's HTTP/1.1 client half (as the registry tools use) on a
/// runtime of its own, so that the shell's synchronous loop can call it. Answers are bounded: a whole answer,
/// and each row of a streamed one, at most `limit` bytes.
struct Http {
    addr: String,
    rt: tokio::runtime::Runtime,
    limit: usize,
}

impl Http {
    fn new(addr: String) -> Result<Http, CliError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| CliError::failure(format!("cannot start the async runtime: {e}")))?;
        Ok(Http {
            addr,
            rt,
            limit: MAX_ANSWER_BYTES,
        })
    }

    fn io_error(what: &str, e: impl std::fmt::Display) -> CliError {
        CliError::new(3, format!("{what} the SQL server failed: {e}"))
    }

    /// Sends `POST path` with a JSON body on a new connection; the answer's head.
    async fn post(
        &self,
        path: &str,
        body: &J,
    ) -> Result<hyper::Response<hyper::body::Incoming>, CliError> {
        let addr = &self.addr;
        let stream = tokio::time::timeout(
            Duration::from_secs(10),
            tokio::net::TcpStream::connect(addr.as_str()),
        )
        .await
        .map_err(|_| "no answer within 10 s".to_string())
        .and_then(|r| r.map_err(|e| e.to_string()))
        .map_err(|e| {
            CliError::new(3, format!("cannot reach the SQL server at http://{addr}: {e} (is `fjord start` or `fjord sql-server` running? --server says where)"))
        })?;
        let _ = stream.set_nodelay(true);
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| Self::io_error("talking to", e))?;
        // The connection task ends with the answer (or when the answer is dropped: a stopped push query).
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let req = hyper::Request::builder()
            .method("POST")
            .uri(path)
            .header(hyper::header::HOST, addr.as_str())
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(http_body_util::Full::new(hyper::body::Bytes::from(
                body.to_string(),
            )))
            .map_err(|e| Self::io_error("building a request to", e))?;
        sender
            .send_request(req)
            .await
            .map_err(|e| Self::io_error("sending to", e))
    }

    /// The whole answer of a bounded response body, as JSON (or a JSON string of its text).
    async fn read_all(
        resp: hyper::Response<hyper::body::Incoming>,
        limit: usize,
    ) -> Result<J, CliError> {
        use http_body_util::BodyExt;
        let bytes = http_body_util::Limited::new(resp.into_body(), limit)
            .collect()
            .await
            .map_err(|e| {
                if e.downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some()
                {
                    too_large(limit)
                } else {
                    Self::io_error("reading the answer of", e)
                }
            })?
            .to_bytes();
        Ok(serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| J::String(String::from_utf8_lossy(&bytes).into_owned())))
    }

    /// A JSON request and its whole JSON answer (status, body).
    fn request(&self, path: &str, body: &J) -> Result<(u16, J), CliError> {
        self.rt.block_on(async {
            tokio::time::timeout(ANSWER_TIMEOUT, async {
                let resp = self.post(path, body).await?;
                let status = resp.status().as_u16();
                Ok((status, Self::read_all(resp, self.limit).await?))
            })
            .await
            .map_err(|_| {
                CliError::new(
                    3,
                    format!(
                        "the SQL server did not answer within {} s",
                        ANSWER_TIMEOUT.as_secs()
                    ),
                )
            })?
        })
    }

    /// Streams the JSON array answer of /query: calls `each` for every element as it arrives, until the array
    /// ends or `stop` is set (checked every 200 ms while no row comes).
    fn stream(
        &self,
        path: &str,
        body: &J,
        stop: &AtomicBool,
        mut each: impl FnMut(&J),
    ) -> Result<(), CliError> {
        use http_body_util::BodyExt;
        self.rt.block_on(async {
            let resp = tokio::time::timeout(ANSWER_TIMEOUT, self.post(path, body))
                .await
                .map_err(|_| CliError::new(3, "the SQL server did not answer the query"))??;
            if resp.status() != 200 {
                let v = Self::read_all(resp, self.limit).await?;
                return Err(CliError::failure(error_text(&v)));
            }
            let mut body = resp.into_body();
            // Elements are one per line: `[header`, `,\nrow`, ..., `]`.
            let mut text: Vec<u8> = Vec::new();
            loop {
                if stop.load(Ordering::SeqCst) {
                    return Ok(());
                }
                // Waiting for the next frame is cancel-safe: a timeout only looks at `stop` again.
                let frame =
                    match tokio::time::timeout(Duration::from_millis(200), body.frame()).await {
                        Err(_) => continue,
                        Ok(None) => break,
                        Ok(Some(f)) => f.map_err(|e| Self::io_error("reading the answer of", e))?,
                    };
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                text.extend_from_slice(&data);
                while let Some(nl) = text.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = text.drain(..=nl).collect();
                    emit_line(&line, &mut each);
                }
                // The server writes `,\n` before a row, not after it: a row that is complete is shown now, not
                // when the next one comes (which, for a quiet topic, may be never).
                if text.iter().rev().find(|b| !b.is_ascii_whitespace()) == Some(&b'}')
                    && emit_line(&text, &mut each)
                {
                    text.clear();
                }
                // Bounded: a row that never ends is an error, not a buffer growing without end.
                if text.len() > self.limit {
                    return Err(too_large(self.limit));
                }
            }
            emit_line(&text, &mut each);
            Ok(())
        })
    }
}

/// Calls `each` with the element on `line` (without the array's `[`, `,` and `]`); whether there was one.
fn emit_line(line: &[u8], each: &mut impl FnMut(&J)) -> bool {
    let t = String::from_utf8_lossy(line);
    let t = t
        .trim()
        .trim_start_matches('[')
        .trim_start_matches(',')
        .trim_end_matches(']')
        .trim_end_matches(',')
        .trim();
    if t.is_empty() {
        return false;
    }
    match serde_json::from_str::<J>(t) {
        Ok(v) => {
            each(&v);
            true
        }
        Err(_) => false,
    }
}

/// `fjord sql-server`: the SQL engine and its REST API alone, against any Kafka-compatible cluster.
pub async fn serve(
    cfg: fjord_sql::engine::EngineConfig,
    listen: std::net::SocketAddr,
) -> anyhow::Result<()> {
    let (bootstrap, command_topic) = (cfg.bootstrap.clone(), cfg.command_topic.clone());
    let registry = cfg
        .registry_url
        .as_ref()
        .map(|r| format!(" registry={r}"))
        .unwrap_or_default();
    let (engine, addr) = start(cfg, listen).await?;
    println!(
        "fjord sql-server ready listen={addr} bootstrap={bootstrap} command_topic={command_topic}{registry}"
    );
    if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        eprintln!("\nFjord SQL on http://{addr} (commands in {command_topic} on {bootstrap}). Press Ctrl-C to stop.\n");
    }
    crate::serve::wait_for_signal().await;
    tracing::info!("SQL server stopping");
    let _ = tokio::task::spawn_blocking(move || engine.shutdown()).await;
    Ok(())
}

/// Starts the engine (against `cfg.bootstrap`) and its REST API on `listen`.
pub async fn start(
    cfg: fjord_sql::engine::EngineConfig,
    listen: std::net::SocketAddr,
) -> anyhow::Result<(Arc<fjord_sql::engine::Engine>, std::net::SocketAddr)> {
    use anyhow::Context;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("the SQL server cannot listen on {listen}"))?;
    let bootstrap = cfg.bootstrap.clone();
    let engine = fjord_sql::engine::Engine::start(cfg)
        .await
        .map_err(|e| anyhow::anyhow!("the SQL engine failed to start against {bootstrap}: {e}"))?;
    let addr = fjord_sql::rest::serve_on(engine.clone(), listener)?;
    Ok((engine, addr))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_skip_nested_types() {
        assert_eq!(
            schema_names("`ID` STRING KEY, `S` STRUCT<`X` INTEGER, `Y` STRING>, `N` BIGINT"),
            vec!["ID", "S", "N"]
        );
    }

    #[test]
    fn tab_completes_keywords_and_names_in_the_typed_case() {
        let names = vec!["CLICKS".to_string(), "CLICK_COUNTS".to_string()];
        assert_eq!(
            completions("select * from cli", 17, &names),
            (14, vec!["click_counts".to_string(), "clicks".to_string()])
        );
        assert_eq!(
            completions("SEL", 3, &names),
            (0, vec!["SELECT".to_string()])
        );
        assert_eq!(
            completions("SHOW STREAMS; DESC", 18, &names),
            (14, vec!["DESCRIBE".to_string()])
        );
        assert_eq!(completions("SELECT ", 7, &names), (7, vec![]));
    }

    /// A server that answers one request with `head` then `parts`, a pause between them, and keeps the
    /// connection open until `hold` ends.
    fn fake_server(head: &'static str, parts: Vec<Vec<u8>>, hold: Duration) -> String {
        use std::io::Read;
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = s.write_all(head.as_bytes());
            for p in parts {
                let _ = s.write_all(&p);
                std::thread::sleep(Duration::from_millis(100));
            }
            std::thread::sleep(hold);
        });
        addr
    }

    fn chunk(s: &str) -> Vec<u8> {
        format!("{:x}\r\n{s}\r\n", s.len()).into_bytes()
    }

    #[test]
    fn push_rows_stream_as_they_come_and_stop_ends_the_query() {
        let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n";
        let addr = fake_server(
            head,
            vec![
                chunk("[{\"header\": {\"queryId\": \"q\", \"schema\": \"`A` INTEGER\"}}"),
                chunk(",\n{\"row\": {\"columns\": [1]}}"),
                // A row split across chunks.
                chunk(",\n{\"row\": {\"col"),
                chunk("umns\": [2]}}"),
            ],
            Duration::from_secs(30),
        );
        let http = Http::new(addr).unwrap();
        let stop = AtomicBool::new(false);
        let mut seen = Vec::new();
        let started = std::time::Instant::now();
        // The server never ends the answer: the rows arrive while it is open, and `stop` ends the wait.
        http.stream("/query", &json!({}), &stop, |el| {
            seen.push(el.clone());
            if el.get("row").is_some_and(|r| r["columns"][0] == 2) {
                stop.store(true, Ordering::SeqCst);
            }
        })
        .unwrap();
        assert!(started.elapsed() < Duration::from_secs(20));
        assert_eq!(seen.len(), 3, "{seen:?}");
        assert_eq!(seen[2]["row"]["columns"], json!([2]));
    }

    #[test]
    fn a_row_or_answer_beyond_the_bound_and_a_hostile_chunk_size_are_errors() {
        let head = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n";
        let long = "x".repeat(5000);
        let addr = fake_server(
            head,
            vec![chunk(&long), chunk(&long)],
            Duration::from_secs(5),
        );
        let mut http = Http::new(addr).unwrap();
        http.limit = 4096;
        let e = http
            .stream("/query", &json!({}), &AtomicBool::new(false), |_| {})
            .unwrap_err();
        assert!(e.message.contains("larger than"), "{}", e.message);

        let head = "HTTP/1.1 200 OK\r\ncontent-length: 10000\r\n\r\n";
        let addr = fake_server(
            head,
            vec![long.clone().into_bytes()],
            Duration::from_secs(5),
        );
        let mut http = Http::new(addr).unwrap();
        http.limit = 4096;
        let e = http.request("/ksql", &json!({})).unwrap_err();
        assert!(e.message.contains("larger than"), "{}", e.message);

        for size in ["ffffffffffffffff", "fffffffffffffffff0"] {
            let head = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n";
            let addr = fake_server(
                head,
                vec![format!("{size}\r\nabc\r\n").into_bytes()],
                Duration::from_secs(1),
            );
            let http = Http::new(addr).unwrap();
            assert!(http.request("/ksql", &json!({})).is_err(), "{size}");
        }
    }

    #[test]
    fn an_unreachable_server_says_where_and_what_to_do() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        drop(l);
        let e = Http::new(addr)
            .unwrap()
            .request("/ksql", &json!({}))
            .unwrap_err();
        assert_eq!(e.code, 3);
        assert!(e.message.contains("--server"), "{}", e.message);
    }
}
