//! The catalog: the streams and tables SQL knows, their columns, topics and formats, and the persistent query
//! that writes each (if any). It is built only by applying commands read from the command topic, so that every
//! instance and every restart sees the same catalog.

use std::collections::BTreeMap;

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
            Format::Kafka => "KAFKA",
            Format::None => "NONE",
        }
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

#[derive(Clone, Debug, Default)]
pub struct Catalog {
    sources: BTreeMap<String, SourceDef>,
}

impl Catalog {
    pub fn get(&self, name: &str) -> Option<&SourceDef> {
        self.sources.get(name)
    }

    /// The source named `name`, or an error that lists what exists.
    pub fn lookup(&self, name: &str, pos: Option<Pos>) -> Result<&SourceDef> {
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
        self.sources.insert(def.name.clone(), def);
    }

    pub fn remove(&mut self, name: &str) -> Option<SourceDef> {
        self.sources.remove(name)
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
