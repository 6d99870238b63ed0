//! The unit of data that flows through a topology, and the byte formats the library writes to topics: windowed
//! keys and counts.

use bytes::Bytes;

/// One record as it flows through a topology: key and value as raw bytes (the library never decodes them;
/// the user's functions do) and its event time in milliseconds since the epoch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// The key; `None` for a keyless record.
    pub key: Option<Bytes>,
    /// The value; `None` is a tombstone.
    pub value: Option<Bytes>,
    /// Event time (ms). Set from the Kafka record's timestamp or the source's [`TimestampExtractor`].
    pub timestamp: i64,
}

impl Record {
    /// A record with a key and a value.
    pub fn new(key: impl Into<Bytes>, value: impl Into<Bytes>, timestamp: i64) -> Record {
        Record {
            key: Some(key.into()),
            value: Some(value.into()),
            timestamp,
        }
    }

    /// The key's bytes, empty for a keyless record.
    pub fn key_bytes(&self) -> &[u8] {
        self.key.as_deref().unwrap_or(&[])
    }

    /// The value's bytes, empty for a tombstone.
    pub fn value_bytes(&self) -> &[u8] {
        self.value.as_deref().unwrap_or(&[])
    }
}

/// Computes a record's event time from the Kafka record (its key, value and the timestamp the producer or
/// broker set). Returning a negative value drops the record (counted in
/// [`crate::MetricsSnapshot::invalid_timestamp_records`]).
pub type TimestampExtractor = std::sync::Arc<dyn Fn(&Record) -> i64 + Send + Sync>;

/// A window a windowed aggregate is kept for.
///
/// For time windows (tumbling, hopping) `end` is exclusive: the window is `[start, end)`. For session windows
/// `start` and `end` are the first and last event times in the session, both inclusive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Window {
    pub start: i64,
    pub end: i64,
}

/// A key with its window, as written to the output topic of a windowed aggregate.
///
/// **Format** (documented, stable): the record key bytes, then the window start and the window end, each an
/// 8-byte big-endian signed integer (milliseconds): `key ‖ start:i64be ‖ end:i64be`. The key is not
/// length-prefixed; its length is the total minus 16.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct WindowedKey {
    pub key: Bytes,
    pub window: Window,
}

impl WindowedKey {
    /// The topic format described on [`WindowedKey`].
    pub fn encode(key: &[u8], window: Window) -> Bytes {
        let mut out = Vec::with_capacity(key.len() + 16);
        out.extend_from_slice(key);
        out.extend_from_slice(&window.start.to_be_bytes());
        out.extend_from_slice(&window.end.to_be_bytes());
        Bytes::from(out)
    }

    /// Parses the topic format; `None` when the bytes are shorter than the 16 bytes of the two bounds.
    pub fn decode(bytes: &[u8]) -> Option<WindowedKey> {
        let n = bytes.len().checked_sub(16)?;
        let start = i64::from_be_bytes(bytes[n..n + 8].try_into().ok()?);
        let end = i64::from_be_bytes(bytes[n + 8..].try_into().ok()?);
        Some(WindowedKey {
            key: Bytes::copy_from_slice(&bytes[..n]),
            window: Window { start, end },
        })
    }
}

/// The value format of `count()` results: an 8-byte big-endian signed integer (Kafka's `LongSerializer`).
pub fn encode_count(n: i64) -> Bytes {
    Bytes::copy_from_slice(&n.to_be_bytes())
}

/// Reads a `count()` value; `None` unless it is exactly 8 bytes.
pub fn decode_count(bytes: &[u8]) -> Option<i64> {
    Some(i64::from_be_bytes(bytes.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windowed_key_round_trips_and_rejects_short_input() {
        let w = Window {
            start: -5,
            end: 1_700_000_000_000,
        };
        let enc = WindowedKey::encode(b"user-1", w);
        assert_eq!(enc.len(), 6 + 16);
        let dec = WindowedKey::decode(&enc).unwrap();
        assert_eq!(&dec.key[..], b"user-1");
        assert_eq!(dec.window, w);
        assert!(WindowedKey::decode(&[0u8; 15]).is_none());
        assert_eq!(WindowedKey::decode(&[0u8; 16]).unwrap().key.len(), 0);
    }

    #[test]
    fn count_codec_is_eight_bytes_big_endian() {
        assert_eq!(&encode_count(258)[..], &[0, 0, 0, 0, 0, 0, 1, 2]);
        assert_eq!(decode_count(&encode_count(-7)), Some(-7));
        assert_eq!(decode_count(b"abc"), None);
    }
}
