//! Stream processing over Kafka topics in the model of Kafka Streams, without a JVM.
//!
//! A [`StreamsBuilder`] describes a topology: sources ([`StreamsBuilder::stream`]), stateless steps on a
//! [`KStream`] (`map`, `filter`, `flat_map`, `try_flat_map`, `branch`, `merge`, `to`), grouping
//! ([`KStream::group_by_key`], [`KStream::group_by`] through a repartition topic) and aggregations
//! ([`KGroupedStream::count`], `reduce`, `aggregate`), optionally over [`TimeWindows`] (tumbling, hopping) or
//! [`SessionWindows`] with grace periods, giving a [`KTable`] whose updates, or with [`KTable::suppress`] only
//! final results, go to a topic.
//! [`KafkaStreams::start`] runs it: instances sharing an application id form a consumer group, one task per
//! input partition, state in local stores ([`store`]) backed by compacted changelog topics.
//!
//! This crate is a Kafka client (librdkafka through `rdkafka`) and knows nothing of Fjord's broker internals;
//! it works against any Kafka-compatible cluster. Keys and values are bytes: serialization is the caller's.

mod error;
mod metrics;
mod record;
mod runtime;
pub mod store;
mod topology;
pub mod window;

pub use error::{Error, Result};
pub use metrics::MetricsSnapshot;
pub use record::{decode_count, encode_count, Record, TimestampExtractor, Window, WindowedKey};
pub use runtime::{
    KafkaStreams, ProcessingGuarantee, StateStores, StoreEntry, StreamsConfig, StreamsState,
};
pub use topology::{
    Consumed, KGroupedStream, KStream, KTable, StreamsBuilder, Suppressed, Topology,
    WindowedKStream,
};
pub use window::{JoinWindows, SessionWindows, TimeWindows, Windows};
