//! Fjord's streaming SQL, in the spirit of ksqlDB: the parser of Fjord's dialect (`parser`), the catalog of
//! streams and tables (`catalog`), typed expressions and their evaluator (`expr`, `functions`), the planner
//! (`plan`), row formats (`format`), the engine that runs persistent and push queries with librdkafka and keeps
//! its catalog in a compacted command topic (`engine`), the REST API on ksqlDB's port (`rest`), and the client
//! half the `fjord sql` shell uses (`client`).
//!
//! It is a Kafka client of any cluster and knows nothing of the broker's internals. Aggregations, windowed or
//! not, are planned here and run on `fjord-streams` (`engine::stateful`); joins are planned and refused for now.

pub mod avro;
pub mod catalog;
pub mod engine;
pub mod error;
pub mod expr;
pub mod format;
pub mod functions;
pub mod json_schema;
pub mod parser;
pub mod plan;
pub mod protobuf;
pub mod registry;
pub mod rest;
pub mod types;

pub use error::{ErrorKind, Pos, Result, SqlError};
