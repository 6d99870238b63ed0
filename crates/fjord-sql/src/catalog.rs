//! The catalog: the streams and tables SQL knows, their columns, topics and formats, and the persistent query
//! that writes each (if any). It is built only by applying commands read from the command topic, so that every
//! instance and every restart sees the same catalog.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::error::{Pos, Result, SqlError};
use crate::parser::SourceKind;
use crate::types::SqlType;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Format {
    Json,
    Delimited,
    Avro,
    Protobuf,
    /// JSON with its schema in the registry (Confluent's JSONSchemaSerializer: wire format, then JSON).
    JsonSr,
    /// Kafka's primitive serializers (keys: a STRING key is its UTF-8 bytes).
    Kafka,
    /// No key.
    None,
}

impl Format {
    pub fn parse(s: &str) -> Option<Format> {
        Some(match s.to_ascii_uppercase().as_str() {
            "JSON" => Format::Json,
            "DELIMITED" => Format::Delimited,
            "AVRO" => Format::Avro,
            "PROTOBUF" => Format::Protobuf,
            "JSON_SR" => Format::JsonSr,
            "KAFKA" => Format::Kafka,
            "NONE" => Format::None,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Format::Json => "JSON",
            Format::Delimited => "DELIMITED",
            Format::Avro => "AVRO",
            Format::Protobuf => "PROTOBUF",
            Format::JsonSr => "JSON_SR",
            Format::Kafka => "KAFKA",
            Format::None => "NONE",
        }
    }

    /// Whether the schema lives in the schema registry (and records carry its wire format).
    pub fn uses_registry(self) -> bool {
        matches!(self, Format::Avro | Format::Protobuf | Format::JsonSr)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Column {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: SqlType,
    /// A key column: read from and written to the record key.
    pub key: bool,
}

/// The persistent query that writes a stream or table (`CREATE ... AS SELECT`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QueryDef {
    /// `CSAS_<NAME>_<n>` / `CTAS_<NAME>_<n>`; its consumer group is `_fjord_sql_<id>`.
    pub id: String,
    /// The statement as written.
    pub sql: String,
    /// False once TERMINATEd: the sink stays, the query does not run.
    pub running: bool,
    /// Where its group started when it had no committed offsets (`auto.offset.reset` at creation).
    #[serde(default)]
    pub reset: Option<String>,
    /// Its processing guarantee (`at_least_once` or `exactly_once_v2`), chosen at creation (`SET
    /// 'processing.guarantee'`, else the server's); none (written before it was kept): at least once.
    #[serde(default)]
    pub guarantee: Option<String>,
    /// `ksql.fail.on.deserialization.error` at creation: a record that does not decode stops the query (ERROR,
    /// restarted from its committed offsets, so it stays there) instead of being skipped and counted.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fail_on_bad_record: bool,
}

impl QueryDef {
    /// Whether the query runs exactly once (its outputs and input offsets commit in one transaction).
    pub fn exactly_once(&self) -> bool {
        self.guarantee
            .as_deref()
            .is_some_and(|g| crate::engine::parse_guarantee(g).unwrap_or(false))
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SourceDef {
    pub name: String,
    pub kind: SourceKind,
    pub columns: Vec<Column>,
    pub topic: String,
    pub key_format: Format,
    pub value_format: Format,
    /// The column whose value is the event time, instead of the record timestamp.
    pub timestamp: Option<String>,
    /// The statement that created it (updated by ALTER).
    pub statement: String,
    pub query: Option<QueryDef>,
}

impl SourceDef {
    pub fn key_columns(&self) -> impl Iterator<Item = &Column> {
        self.columns.iter().filter(|c| c.key)
    }

    pub fn value_columns(&self) -> impl Iterator<Item = &Column> {
        self.columns.iter().filter(|c| !c.key)
    }

    /// The schema as ksqlDB prints it: `` `ID` STRING KEY, `N` INTEGER ``.
    pub fn schema_text(&self) -> String {
        self.columns
            .iter()
            .map(|c| {
                format!(
                    "`{}` {}{}",
                    c.name,
                    c.ty,
                    if !c.key {
                        ""
                    } else if self.kind == SourceKind::Table {
                        " PRIMARY KEY"
                    } else {
                        " KEY"
                    }
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// A command of the command topic that could not be read back (written by a newer version, or damaged): the
/// stream, table or query it defined is not served, but it stays visible (SHOW STREAMS, SHOW QUERIES) as
/// BROKEN with the reason, and its name stays taken until it is DROPped, so that nothing disappears silently.
#[derive(Clone, Debug, PartialEq)]
pub struct BrokenCommand {
    /// The command's key: the stream's or table's name.
    pub name: String,
    /// What could still be read of it, to list it where it belongs.
    pub kind: Option<SourceKind>,
    pub topic: Option<String>,
    pub query_id: Option<String>,
    /// Its offset in the command topic.
    pub offset: i64,
    pub reason: String,
}

/// One command read from the command topic.
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    Define(SourceDef),
    Broken(BrokenCommand),
}

/// The latest command per key of the command topic as it is read, and the order of their last writes: an index
/// per key, so that reading n commands costs O(n log n), not a rescan of the order per command.
#[derive(Debug, Default)]
pub struct CommandLog {
    latest: HashMap<String, (i64, Option<Command>)>,
}

impl CommandLog {
    /// Records the command at `offset`: `key` its key (`None`: not UTF-8), `payload` its value (`None`: a
    /// tombstone, the source was dropped). A command that does not decode is kept as [`Command::Broken`].
    pub fn record(&mut self, key: Option<&[u8]>, offset: i64, payload: Option<&[u8]>) {
        let name = match key.map(std::str::from_utf8) {
            Some(Ok(k)) => k.to_string(),
            Some(Err(_)) => String::from_utf8_lossy(key.unwrap_or_default()).into_owned(),
            None => format!("<no key at offset {offset}>"),
        };
        let broken = |reason: String, payload: Option<&[u8]>| {
            let j: Option<serde_json::Value> = payload.and_then(|p| serde_json::from_slice(p).ok());
            let text =
                |v: Option<&serde_json::Value>| v.and_then(|x| x.as_str()).map(str::to_string);
            Command::Broken(BrokenCommand {
                name: name.clone(),
                kind: j
                    .as_ref()
                    .and_then(|j| serde_json::from_value(j["kind"].clone()).ok()),
                topic: text(j.as_ref().and_then(|j| j.get("topic"))),
                query_id: text(j.as_ref().and_then(|j| j.pointer("/query/id"))),
                offset,
                reason,
            })
        };
        let cmd = match (key.map(std::str::from_utf8), payload) {
            (Some(Ok(_)), None) => None,
            (Some(Ok(_)), Some(v)) => Some(match serde_json::from_slice::<SourceDef>(v) {
                Ok(d) if d.name == name => Command::Define(d),
                Ok(d) => broken(
                    format!(
                        "the command's key {name} is not the name {} it defines",
                        d.name
                    ),
                    Some(v),
                ),
                Err(e) => broken(format!("the definition does not decode: {e}"), Some(v)),
            }),
            (_, p) => Some(broken(
                "the command's key is not a UTF-8 name".to_string(),
                p,
            )),
        };
        self.latest.insert(name, (offset, cmd));
    }

    /// The latest command of each key that is not a tombstone, in the order they were last written.
    pub fn into_ordered(self) -> Vec<Command> {
        let mut v: Vec<(i64, Command)> = self
            .latest
            .into_values()
            .filter_map(|(o, c)| c.map(|c| (o, c)))
            .collect();
        v.sort_unstable_by_key(|(o, _)| *o);
        v.into_iter().map(|(_, c)| c).collect()
    }
}

#[derive(Clone, Debug, Default)]
pub struct Catalog {
    sources: BTreeMap<String, SourceDef>,
    broken: BTreeMap<String, BrokenCommand>,
}

impl Catalog {
    pub fn get(&self, name: &str) -> Option<&SourceDef> {
        self.sources.get(name)
    }

    /// The source named `name`, or an error that lists what exists.
    pub fn lookup(&self, name: &str, pos: Option<Pos>) -> Result<&SourceDef> {
        self.refuse_broken(name, pos)?;
        self.sources.get(name).ok_or_else(|| {
            let known: Vec<&str> = self.sources.keys().map(String::as_str).collect();
            let hint = if known.is_empty() {
                "no streams or tables exist yet (CREATE STREAM first)".to_string()
            } else {
                format!("these exist: {}", known.join(", "))
            };
            let case_hint = self
                .sources
                .keys()
                .find(|k| k.eq_ignore_ascii_case(name) && *k != name)
                .map(|k| format!(" (names are case-sensitive when quoted: did you mean `{k}`?)"))
                .unwrap_or_default();
            SqlError::semantic_at(
                format!("unknown stream or table {name}: {hint}{case_hint}"),
                pos,
            )
        })
    }

    pub fn all(&self) -> impl Iterator<Item = &SourceDef> {
        self.sources.values()
    }

    pub fn put(&mut self, def: SourceDef) {
        self.broken.remove(&def.name);
        self.sources.insert(def.name.clone(), def);
    }

    pub fn remove(&mut self, name: &str) -> Option<SourceDef> {
        self.broken.remove(name);
        self.sources.remove(name)
    }

    pub fn put_broken(&mut self, b: BrokenCommand) {
        self.sources.remove(&b.name);
        self.broken.insert(b.name.clone(), b);
    }

    pub fn broken(&self, name: &str) -> Option<&BrokenCommand> {
        self.broken.get(name)
    }

    pub fn all_broken(&self) -> impl Iterator<Item = &BrokenCommand> {
        self.broken.values()
    }

    /// An error when `name` is a command that could not be read back: it is neither served nor replaced
    /// silently; DROP removes it.
    pub fn refuse_broken(&self, name: &str, pos: Option<Pos>) -> Result<()> {
        match self.broken.get(name) {
            None => Ok(()),
            Some(b) => Err(SqlError::semantic_at(
                format!(
                    "{name} is BROKEN: its definition at offset {} of the command topic could not be read back ({}); DROP {} {name} removes it",
                    b.offset,
                    b.reason,
                    b.kind.map_or("STREAM", |k| k.word())
                ),
                pos,
            )),
        }
    }

    /// The queries that read `name` (the sources whose running query selects from it).
    pub fn readers_of(&self, name: &str) -> Vec<String> {
        self.sources
            .values()
            .filter_map(|s| s.query.as_ref().map(|q| (s, q)))
            .filter(|(_, q)| q.running && crate::plan::query_reads(&q.sql, name))
            .map(|(_, q)| q.id.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(name: &str) -> Vec<u8> {
        serde_json::to_vec(&SourceDef {
            name: name.to_string(),
            kind: SourceKind::Stream,
            columns: vec![Column {
                name: "V".into(),
                ty: SqlType::String,
                key: false,
            }],
            topic: name.to_lowercase(),
            key_format: Format::Kafka,
            value_format: Format::Json,
            timestamp: None,
            statement: String::new(),
            query: None,
        })
        .unwrap()
    }

    fn names(cmds: &[Command]) -> Vec<String> {
        cmds.iter()
            .map(|c| match c {
                Command::Define(d) => d.name.clone(),
                Command::Broken(b) => format!("broken:{}", b.name),
            })
            .collect()
    }

    #[test]
    fn the_last_write_of_each_key_wins_in_the_order_of_last_writes() {
        let mut log = CommandLog::default();
        log.record(Some(b"A"), 0, Some(&def("A")));
        log.record(Some(b"B"), 1, Some(&def("B")));
        log.record(Some(b"C"), 2, Some(&def("C")));
        log.record(Some(b"A"), 3, Some(&def("A")));
        log.record(Some(b"B"), 4, None);
        log.record(
            Some(b"D"),
            5,
            Some(b"{\"name\": \"D\", \"kind\": \"Stream\", \"topic\": \"d\", \"futureField\": 1}"),
        );
        let cmds = log.into_ordered();
        assert_eq!(names(&cmds), ["C", "A", "broken:D"]);
        let Command::Broken(b) = &cmds[2] else {
            unreachable!()
        };
        assert_eq!(b.offset, 5);
        assert_eq!(b.kind, Some(SourceKind::Stream));
        assert_eq!(b.topic.as_deref(), Some("d"));
        assert!(b.reason.contains("does not decode"), "{}", b.reason);
    }

    #[test]
    fn a_key_that_is_not_utf8_or_not_the_defined_name_is_broken_not_skipped() {
        let mut log = CommandLog::default();
        log.record(Some(b"\xff"), 0, Some(&def("X")));
        log.record(Some(b"Y"), 1, Some(&def("Z")));
        let cmds = log.into_ordered();
        assert_eq!(names(&cmds), ["broken:\u{fffd}", "broken:Y"]);
    }

    /// Replaying a command topic of many distinct names is not quadratic: the old `order.retain` rescanned the
    /// whole order for every command (200,000 names: about 2e10 string comparisons, minutes; now well under a
    /// second even in a debug build).
    #[test]
    fn replaying_many_commands_is_not_quadratic() {
        let n = 200_000;
        // Every name is new, and every tenth command rewrites an earlier one.
        let commands: Vec<(String, Vec<u8>)> = (0..n)
            .map(|i| {
                let key = if i % 10 == 9 {
                    format!("N{}", i / 2)
                } else {
                    format!("N{i}")
                };
                let payload = def(&key);
                (key, payload)
            })
            .collect();
        // Only the replay is timed, not making its input.
        let started = std::time::Instant::now();
        let mut log = CommandLog::default();
        for (i, (key, payload)) in commands.iter().enumerate() {
            log.record(Some(key.as_bytes()), i as i64, Some(payload));
        }
        let cmds = log.into_ordered();
        assert!(cmds.len() > n as usize * 8 / 10);
        assert!(cmds.iter().all(|c| matches!(c, Command::Define(_))));
        let took = started.elapsed();
        assert!(
            took < std::time::Duration::from_secs(20),
            "replaying {n} commands took {took:?}"
        );
    }
}
