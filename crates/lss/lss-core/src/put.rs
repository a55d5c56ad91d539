//! What makes a put acceptable, and when it conflicts (lss-protocol.md §3).
//!
//! A put goes through two gates before any store sees it:
//! 1. [`SortedKvs::new`], before auth (as the reference orders its checks):
//!    keys strictly increasing in byte order, and every configured size limit.
//! 2. [`ValidPut::new`], after the token and the client MAC have been checked:
//!    binds the kvs to the authenticated namespace.
//!
//! Stores accept only a [`ValidPut`], so no backend ever sees raw input, and
//! decide each key with [`accepts`] inside their transaction, so every backend
//! applies the same version rule.

use crate::{ClientId, KeyValue};

/// Configurable size limits. Each is checked where the data first appears.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest key, in UTF-8 bytes.
    pub max_key_bytes: usize,
    /// Longest value, in bytes.
    pub max_value_bytes: usize,
    /// Most kvs in one put.
    pub max_keys_per_put: usize,
    /// Largest encoded request (enforced by the transport while decoding).
    pub max_request_bytes: usize,
    /// Most bytes (keys plus values) one namespace may hold (enforced by the store).
    pub max_namespace_bytes: u64,
    /// Most requests (puts and gets) of one client being served at once
    /// (enforced by the server). A signer has one put in flight; this stops a
    /// client that floods from crowding out the others.
    pub max_inflight_per_client: usize,
    /// Most requests open at once on one HTTP/2 connection (advertised as
    /// SETTINGS_MAX_CONCURRENT_STREAMS, enforced by the transport; more are
    /// refused). A signer keeps one or two; without a bound one connection
    /// could hold any number of stalled reads.
    pub max_streams_per_connection: usize,
    /// Most bytes (keys plus values) of replies one client may have queued,
    /// read from the store but not yet read by the client (enforced by the
    /// server). At least `max_namespace_bytes`, or a client could not read
    /// its whole namespace with one `Get`.
    pub max_reply_bytes_per_client: u64,
    /// Most bytes of replies queued for all clients together: the server's
    /// bound on memory held for readers.
    pub max_reply_bytes: u64,
}

impl Default for Limits {
    /// Defaults sized for VLS signers: keys are short paths (under 200 bytes),
    /// values are JSON (channel state, the chain tracker) that reach hundreds of
    /// KiB on busy nodes. A request may carry a whole state upload, so it may be
    /// larger than the 4 MiB that reference clients send at most.
    fn default() -> Self {
        Limits {
            max_key_bytes: 1_024,
            max_value_bytes: 4 * 1_024 * 1_024,
            max_keys_per_put: 10_000,
            max_request_bytes: 16 * 1_024 * 1_024,
            max_namespace_bytes: 1_024 * 1_024 * 1_024,
            max_inflight_per_client: 16,
            max_streams_per_connection: 32,
            max_reply_bytes_per_client: 1_024 * 1_024 * 1_024,
            max_reply_bytes: 2 * 1_024 * 1_024 * 1_024,
        }
    }
}

/// Which limit was exceeded; names the configuration option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// `max_key_bytes`
    KeyBytes,
    /// `max_value_bytes`
    ValueBytes,
    /// `max_keys_per_put`
    KeysPerPut,
    /// `max_request_bytes`
    RequestBytes,
    /// `max_namespace_bytes`
    NamespaceBytes,
    /// `max_inflight_per_client`
    InflightPerClient,
    /// `max_reply_bytes_per_client`
    ReplyBytesPerClient,
    /// `max_reply_bytes`
    ReplyBytes,
}

impl Limit {
    /// The configuration name of the limit.
    pub fn name(self) -> &'static str {
        match self {
            Limit::KeyBytes => "max_key_bytes",
            Limit::ValueBytes => "max_value_bytes",
            Limit::KeysPerPut => "max_keys_per_put",
            Limit::RequestBytes => "max_request_bytes",
            Limit::NamespaceBytes => "max_namespace_bytes",
            Limit::InflightPerClient => "max_inflight_per_client",
            Limit::ReplyBytesPerClient => "max_reply_bytes_per_client",
            Limit::ReplyBytes => "max_reply_bytes",
        }
    }
}

impl std::fmt::Display for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A request exceeded a configured limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{limit} exceeded: {got} > {max}")]
pub struct LimitExceeded {
    /// Which limit.
    pub limit: Limit,
    /// The configured maximum.
    pub max: u64,
    /// What the request would have needed.
    pub got: u64,
}

/// Why a put was refused before reaching a store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PutRejected {
    /// A key is smaller (in byte order) than the one before it.
    #[error("keys are not sorted")]
    UnsortedKeys,
    /// A key appears twice. The reference lets the last duplicate win; we
    /// refuse the ambiguity (lss-protocol.md §3).
    #[error("duplicate key in put")]
    DuplicateKey,
    /// A size limit.
    #[error(transparent)]
    Limit(#[from] LimitExceeded),
}

/// Put kvs that are strictly sorted and within the size limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SortedKvs(Vec<KeyValue>);

impl SortedKvs {
    /// Checks order first (so an unsorted request gets the reference's
    /// "keys are not sorted" whatever its sizes), then the limits.
    pub fn new(kvs: Vec<KeyValue>, limits: &Limits) -> Result<Self, PutRejected> {
        for pair in kvs.windows(2) {
            match pair[0].key.as_bytes().cmp(pair[1].key.as_bytes()) {
                std::cmp::Ordering::Less => {}
                std::cmp::Ordering::Equal => return Err(PutRejected::DuplicateKey),
                std::cmp::Ordering::Greater => return Err(PutRejected::UnsortedKeys),
            }
        }
        check(Limit::KeysPerPut, limits.max_keys_per_put, kvs.len())?;
        for kv in &kvs {
            check(Limit::KeyBytes, limits.max_key_bytes, kv.key.len())?;
            check(Limit::ValueBytes, limits.max_value_bytes, kv.value.len())?;
        }
        Ok(SortedKvs(kvs))
    }

    /// The kvs, in request order.
    pub fn as_slice(&self) -> &[KeyValue] {
        &self.0
    }

    /// Adds the server's own kvs (its verifiable log's keys), keeping key
    /// order. They are not counted against the client's per-put limits;
    /// a key already present is an error.
    pub fn with_server_kvs(self, extra: Vec<KeyValue>) -> Result<Self, PutRejected> {
        let mut all = self.0;
        for kv in extra {
            match all.binary_search_by(|k| k.key.as_bytes().cmp(kv.key.as_bytes())) {
                Ok(_) => return Err(PutRejected::DuplicateKey),
                Err(i) => all.insert(i, kv),
            }
        }
        Ok(SortedKvs(all))
    }
}

fn check(limit: Limit, max: usize, got: usize) -> Result<(), LimitExceeded> {
    if got > max {
        return Err(LimitExceeded {
            limit,
            max: max as u64,
            got: got as u64,
        });
    }
    Ok(())
}

/// An authenticated, MAC-checked, well-formed put: the only input a store takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidPut {
    client: ClientId,
    kvs: SortedKvs,
}

impl ValidPut {
    /// Binds checked kvs to the namespace of an authenticated client. Call it
    /// only after the token and the client MAC have been verified.
    pub fn new(client: ClientId, kvs: SortedKvs) -> Self {
        ValidPut { client, kvs }
    }

    /// The namespace written.
    pub fn client(&self) -> &ClientId {
        &self.client
    }

    /// The kvs, strictly sorted by key.
    pub fn kvs(&self) -> &[KeyValue] {
        self.kvs.as_slice()
    }

    /// Gives up the kvs.
    pub fn into_kvs(self) -> Vec<KeyValue> {
        self.kvs.0
    }
}

/// What a store did with a put. A conflict is an expected outcome, not an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutOutcome {
    /// Every kv was written, durably.
    Committed,
    /// Nothing was written; one entry per offending key, in request order, with
    /// its current version and value (`-1` and empty when missing).
    Conflict(Vec<KeyValue>),
}

/// The version rule: a write of `requested` is accepted iff it is exactly one
/// more than the `current` version, or 0 for a missing key. Negative requests
/// never match, and a current version of `i64::MAX` accepts nothing instead of
/// overflowing.
pub fn accepts(requested: i64, current: Option<i64>) -> bool {
    let next = match current {
        None => Some(0),
        Some(v) => v.checked_add(1),
    };
    next == Some(requested)
}

/// The namespace quota rule: a namespace holding `used` bytes, of which a put
/// replaces `freed` (old keys and values) with `added`, holds the returned
/// number of bytes afterwards. A put that would grow the namespace past `max`
/// is refused; one that does not grow it is always allowed, so a namespace
/// over its quota (after the quota was lowered) can still be updated in place.
pub fn namespace_after(used: u64, freed: u64, added: u64, max: u64) -> Result<u64, LimitExceeded> {
    let after = used.saturating_sub(freed).saturating_add(added);
    if after > used && after > max {
        return Err(LimitExceeded {
            limit: Limit::NamespaceBytes,
            max,
            got: after,
        });
    }
    Ok(after)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(key: &str, len: usize) -> KeyValue {
        KeyValue::new(key, 0, vec![7; len])
    }

    #[test]
    fn order_is_byte_order_strictly_increasing() {
        let limits = Limits::default();
        assert!(SortedKvs::new(vec![kv("a", 0), kv("b", 0), kv("ba", 0)], &limits).is_ok());
        assert!(SortedKvs::new(vec![], &limits).is_ok());
        assert_eq!(
            SortedKvs::new(vec![kv("b", 0), kv("a", 0)], &limits),
            Err(PutRejected::UnsortedKeys)
        );
        assert_eq!(
            SortedKvs::new(vec![kv("a", 0), kv("a", 0)], &limits),
            Err(PutRejected::DuplicateKey)
        );
        // Byte order, not char or locale order: 'Z' (0x5a) < 'a' (0x61) < 'é' (0xc3 ..).
        assert!(SortedKvs::new(vec![kv("Z", 0), kv("a", 0), kv("é", 0)], &limits).is_ok());
        assert_eq!(
            SortedKvs::new(vec![kv("é", 0), kv("z", 0)], &limits),
            Err(PutRejected::UnsortedKeys)
        );
    }

    #[test]
    fn limits_name_themselves() {
        let limits = Limits {
            max_key_bytes: 3,
            max_value_bytes: 4,
            max_keys_per_put: 2,
            ..Limits::default()
        };
        assert_eq!(
            SortedKvs::new(vec![kv("abcd", 0)], &limits),
            Err(LimitExceeded {
                limit: Limit::KeyBytes,
                max: 3,
                got: 4
            }
            .into())
        );
        assert_eq!(
            SortedKvs::new(vec![kv("a", 5)], &limits),
            Err(LimitExceeded {
                limit: Limit::ValueBytes,
                max: 4,
                got: 5
            }
            .into())
        );
        assert_eq!(
            SortedKvs::new(vec![kv("a", 0), kv("b", 0), kv("c", 0)], &limits),
            Err(LimitExceeded {
                limit: Limit::KeysPerPut,
                max: 2,
                got: 3
            }
            .into())
        );
        assert!(SortedKvs::new(vec![kv("abc", 4), kv("b", 4)], &limits).is_ok());
        let err = PutRejected::from(LimitExceeded {
            limit: Limit::KeyBytes,
            max: 3,
            got: 4,
        });
        assert_eq!(err.to_string(), "max_key_bytes exceeded: 4 > 3");
    }

    #[test]
    fn version_rule() {
        assert!(accepts(0, None));
        assert!(!accepts(1, None));
        assert!(!accepts(-1, None));
        assert!(accepts(1, Some(0)));
        assert!(!accepts(0, Some(0)));
        assert!(!accepts(2, Some(0)));
        assert!(!accepts(-1, Some(0)));
        assert!(accepts(i64::MAX, Some(i64::MAX - 1)));
        assert!(!accepts(i64::MIN, Some(i64::MAX)));
        assert!(!accepts(i64::MAX, Some(i64::MAX)));
    }

    proptest::proptest! {
        /// The rule agrees with a naive model on arbitrary versions.
        #[test]
        fn version_rule_matches_model(req in proptest::num::i64::ANY, cur in proptest::option::of(0i64..=i64::MAX)) {
            let model = match cur { None => req == 0, Some(c) => (c as i128) + 1 == req as i128 };
            proptest::prop_assert_eq!(accepts(req, cur), model);
        }

        /// Ordering check agrees with "sorted and deduplicated equals itself".
        #[test]
        fn order_check_matches_model(keys in proptest::collection::vec("[a-c\u{e9}]{0,3}", 0..6)) {
            let kvs: Vec<_> = keys.iter().map(|k| kv(k, 0)).collect();
            let mut model = keys.clone();
            model.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
            model.dedup();
            proptest::prop_assert_eq!(SortedKvs::new(kvs, &Limits::default()).is_ok(), model == keys);
        }
    }
}
