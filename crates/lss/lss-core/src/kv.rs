//! The key/value/version triple that every LSS message carries.

/// One versioned entry of a client's namespace.
///
/// `version` is the wire's `int64`: stored versions are never negative, and a
/// conflict reports `-1` for a key that does not exist (lss-protocol.md §3).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyValue {
    /// UTF-8 key; compared and ordered as bytes.
    pub key: String,
    /// Version of this value (0 for the first write of a key).
    pub version: i64,
    /// Opaque value bytes; empty is legal (a tombstone).
    pub value: Vec<u8>,
}

impl KeyValue {
    /// Builds an entry.
    pub fn new(key: impl Into<String>, version: i64, value: impl Into<Vec<u8>>) -> Self {
        KeyValue {
            key: key.into(),
            version,
            value: value.into(),
        }
    }

    /// The conflict entry for a key: its current version and value, or
    /// `-1` and an empty value when it does not exist (lss-protocol.md §3).
    pub fn conflict(key: impl Into<String>, current: Option<(i64, Vec<u8>)>) -> Self {
        let (version, value) = current.unwrap_or((-1, Vec::new()));
        KeyValue {
            key: key.into(),
            version,
            value,
        }
    }

    /// Bytes this entry occupies in a namespace quota: key plus value.
    pub fn stored_len(&self) -> u64 {
        (self.key.len() + self.value.len()) as u64
    }
}

/// Values may be secrets of the client; `Debug` shows only their length.
impl std::fmt::Debug for KeyValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyValue")
            .field("key", &self.key)
            .field("version", &self.version)
            .field("value_len", &self.value.len())
            .finish()
    }
}
