//! Fjord Connect: a Kafka-Connect-compatible runtime. It serves Kafka Connect's REST API (the same paths, JSON
//! shapes and `{"error_code", "message"}` errors, so curl scripts, kcctl and Kafka UIs keep working), runs
//! connectors in a standalone worker whose source offsets live in a local file or a distributed-mode worker whose
//! connectors and offsets live in Connect's internal topics, converts records with
//! Connect's String, ByteArray and JSON converters and Confluent's schema-registry AvroConverter,
//! JsonSchemaConverter and ProtobufConverter, applies Connect's single message transforms, and has the
//! FileStream source and sink, an Elasticsearch/OpenSearch sink, an HTTP sink and a PostgreSQL (JDBC) sink and source built in.
//!
//! It is a Kafka client of the brokers (librdkafka through `rdkafka`) and knows nothing of their internals:
//! `fjord connect standalone` runs against any Kafka-compatible cluster.
//!
//! Distributed workers form a group with Connect's own `connect` protocol and incremental cooperative rebalancing
//! (`group`). Every worker reads the status topic back (`status_store`). The PostgreSQL
//! sink and source (`pg_sink`, `pg_source`) and Connect's error handling with dead-letter topics and automatic task
//! restarts (`error_handling`) are here.

pub mod admin_logging;
pub mod api;
pub mod config;
pub mod converter;
pub mod distributed;
pub mod elasticsearch;
pub mod error;
pub mod error_handling;
pub mod file_sink;
pub mod file_source;
pub mod group;
pub mod http_client;
pub mod http_sink;
pub mod lease;
pub mod offsets;
pub mod pg_sink;
pub mod pg_source;
pub mod plugins;
pub mod protobuf_data;
pub mod registry_converter;
pub mod sink_task;
pub mod standalone;
pub mod status_store;
pub mod topics;
pub mod transforms;
pub mod worker;

pub use error::{Error, Result};
pub use worker::Worker;
