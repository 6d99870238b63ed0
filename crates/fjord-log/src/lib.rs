//! Placeholder API surface of `fjord-log`; implementation in progress.
#![allow(unused_variables, clippy::todo)]

use std::path::{Path, PathBuf};

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("corrupt record batch: {0}")]
    CorruptMessage(String),
    #[error("invalid record batch: {0}")]
    InvalidRecord(String),
    #[error("unsupported message format: {0}")]
    UnsupportedFormat(String),
    #[error("batch of {size} bytes exceeds max.message.bytes {max}")]
    RecordTooLarge { size: usize, max: usize },
    #[error("offset {offset} out of range [{log_start}, {log_end}]")]
    OffsetOutOfRange { offset: i64, log_start: i64, log_end: i64 },
    #[error("invalid timestamp: {0}")]
    InvalidTimestamp(String),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimestampType {
    CreateTime,
    LogAppendTime,
}

#[derive(Clone, Debug, PartialEq)]
pub struct LogConfig {
    pub segment_bytes: u64,
    pub segment_ms: i64,
    pub segment_index_bytes: u64,
    pub index_interval_bytes: u64,
    pub retention_ms: i64,
    pub retention_bytes: i64,
    pub max_message_bytes: usize,
    pub cleanup_delete: bool,
    pub cleanup_compact: bool,
    pub delete_retention_ms: i64,
    pub min_cleanable_dirty_ratio: f64,
    pub min_compaction_lag_ms: i64,
    pub file_delete_delay_ms: i64,
    pub timestamp_type: TimestampType,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1073741824,
            segment_ms: 604800000,
            segment_index_bytes: 10485760,
            index_interval_bytes: 4096,
            retention_ms: 604800000,
            retention_bytes: -1,
            max_message_bytes: 1048588,
            cleanup_delete: true,
            cleanup_compact: false,
            delete_retention_ms: 86400000,
            min_cleanable_dirty_ratio: 0.5,
            min_compaction_lag_ms: 0,
            file_delete_delay_ms: 60000,
            timestamp_type: TimestampType::CreateTime,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct BatchInfo {
    pub base_offset: i64,
    pub last_offset: i64,
    pub record_count: i32,
    pub first_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub is_transactional: bool,
    pub is_control: bool,
    pub compression: u8,
    pub size: usize,
}

#[derive(Clone, Debug)]
pub struct AppendInfo {
    pub base_offset: i64,
    pub last_offset: i64,
    pub log_append_time: i64,
    pub max_timestamp: i64,
    pub log_start_offset: i64,
    pub batches: Vec<BatchInfo>,
}

#[derive(Clone, Debug)]
pub struct ReadInfo {
    pub records: bytes::Bytes,
    pub log_start_offset: i64,
    pub log_end_offset: i64,
}

pub struct FlushHandle {
    files: Vec<std::sync::Arc<std::fs::File>>,
    flush_to: i64,
}

impl FlushHandle {
    pub fn flush_to(&self) -> i64 {
        self.flush_to
    }
    pub fn sync(&self) -> Result<()> {
        todo!()
    }
}

pub struct Log {
    dir: PathBuf,
    config: LogConfig,
}

impl Log {
    pub fn open(dir: &Path, config: LogConfig, now_ms: i64) -> Result<Log> {
        todo!()
    }
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn config(&self) -> &LogConfig {
        &self.config
    }
    pub fn set_config(&mut self, config: LogConfig) {
        self.config = config;
    }
    pub fn append(&mut self, records: bytes::Bytes, leader_epoch: i32, now_ms: i64) -> Result<AppendInfo> {
        todo!()
    }
    pub fn append_as_follower(&mut self, records: bytes::Bytes) -> Result<AppendInfo> {
        todo!()
    }
    pub fn read(&self, offset: i64, max_bytes: usize, max_offset: i64, min_one_batch: bool) -> Result<ReadInfo> {
        todo!()
    }
    pub fn log_start_offset(&self) -> i64 {
        todo!()
    }
    pub fn log_end_offset(&self) -> i64 {
        todo!()
    }
    pub fn size_bytes(&self) -> u64 {
        todo!()
    }
    pub fn segment_count(&self) -> usize {
        todo!()
    }
    pub fn offset_for_timestamp(&self, ts: i64) -> Result<Option<(i64, i64)>> {
        todo!()
    }
    pub fn max_timestamp(&self) -> Option<(i64, i64)> {
        todo!()
    }
    pub fn delete_records_before(&mut self, offset: i64) -> Result<i64> {
        todo!()
    }
    pub fn truncate_to(&mut self, offset: i64) -> Result<()> {
        todo!()
    }
    pub fn enforce_retention(&mut self, now_ms: i64) -> Result<usize> {
        todo!()
    }
    pub fn compact(&mut self, now_ms: i64) -> Result<u64> {
        todo!()
    }
    pub fn flush_handle(&self) -> FlushHandle {
        todo!()
    }
    pub fn mark_flushed(&mut self, offset: i64) {
        todo!()
    }
    pub fn flushed_offset(&self) -> i64 {
        todo!()
    }
    pub fn flush(&mut self) -> Result<()> {
        todo!()
    }
    pub fn close(self) -> Result<()> {
        todo!()
    }
    pub fn delete(self) -> Result<()> {
        todo!()
    }
}

pub fn validate_batches(records: &[u8], max_message_bytes: usize) -> Result<Vec<BatchInfo>> {
    todo!()
}
