//! The storage contract of `lssd`, and its embedded backend.
//!
//! [`Store`] is what every backend (embedded redb here; PostgreSQL and etcd in
//! their own crates) promises. The protocol rules are not re-implemented per
//! backend: a store receives only a [`ValidPut`] and decides each key with
//! [`lss_core::accepts`], so behaviour cannot drift between backends. The
//! [`conformance`] suite (feature `conformance`) checks the contract text below
//! against any implementation.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use lss_core::{ClientId, KeyValue, LimitExceeded, PutOutcome, ValidPut};

#[cfg(feature = "conformance")]
pub mod conformance;
pub mod metrics;
pub mod redb;
pub mod retry;

pub use crate::redb::{RedbConfig, RedbStore};

/// Why a store operation failed. A version conflict is not an error: it is
/// [`PutOutcome::Conflict`].
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend cannot serve now (I/O error, database down, writer stopped).
    /// Nothing was written; the request may be retried.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// Stored bytes do not decode. Nothing was written.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// The put would grow the namespace past `max_namespace_bytes`. Nothing was written.
    #[error(transparent)]
    Limit(#[from] LimitExceeded),
}

/// What a whole store holds ([`Store::totals`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Namespaces holding at least one key.
    pub namespaces: u64,
    /// Bytes of keys and values in all of them.
    pub bytes: u64,
}

/// A versioned key-value store partitioned by client namespace.
///
/// The contract every backend keeps (lss-protocol.md §3):
/// - **Namespaces.** Keys of one [`ClientId`] are invisible to every other.
/// - **Atomic, version-checked put.** In one transaction, each key's current
///   version is read and checked with [`lss_core::accepts`]. If any key fails,
///   nothing is written and the outcome is [`PutOutcome::Conflict`] listing
///   exactly the failing keys in request order, each with its current version
///   and value (`-1`, empty when missing). Otherwise every kv is written.
/// - **Durable.** `Ok(PutOutcome::Committed)` is returned only after the
///   write is durable: a crash afterwards cannot lose it.
/// - **Quota.** A put that grows the namespace past its byte limit (keys plus
///   values) fails with [`StoreError::Limit`]; one that does not grow it is
///   always allowed.
/// - **Snapshot prefix read.** `get` returns every key of the namespace that
///   starts with `prefix` as a literal byte prefix (no wildcards; the empty
///   prefix returns all), from one consistent snapshot, in byte order of keys.
/// - **Errors.** [`StoreError::Unavailable`] is retryable and leaves the data
///   unchanged; the store keeps serving later requests.
pub trait Store: Send + Sync + 'static {
    /// Applies a put atomically; see the trait's contract.
    fn put(&self, put: ValidPut) -> impl Future<Output = Result<PutOutcome, StoreError>> + Send;

    /// Reads a prefix of one namespace from a single snapshot, in byte order.
    fn get(
        &self,
        client: ClientId,
        prefix: String,
    ) -> impl Future<Output = Result<Vec<KeyValue>, StoreError>> + Send;

    /// The bytes (keys plus values) the namespace holds, as its quota counts
    /// them: an upper bound of what any read of it returns, known before
    /// reading (the server reserves memory for a reply with it).
    fn usage(&self, client: ClientId) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// How many namespaces hold data and how many bytes (keys plus values,
    /// as quotas count them) all of them hold: read from the per-namespace
    /// usage the store keeps anyway, so it costs one pass over namespaces,
    /// not over data. For monitoring; not from one snapshot with anything.
    fn totals(&self) -> impl Future<Output = Result<Totals, StoreError>> + Send;

    /// The same read as [`Store::get`], from one snapshot, handed out a page
    /// at a time so a large result need not be held in memory at once. The
    /// default reads everything first; backends that can hold a snapshot
    /// open page through it.
    fn pages(
        &self,
        client: ClientId,
        prefix: String,
    ) -> impl Future<Output = Result<Box<dyn Pages>, StoreError>> + Send {
        async move {
            let kvs = self.get(client, prefix).await?;
            Ok(Box::new(Loaded(kvs.into())) as Box<dyn Pages>)
        }
    }
}

/// A boxed future of a [`Pages`] call.
pub type PageFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// A prefix read in progress, from one snapshot.
pub trait Pages: Send + 'static {
    /// How many entries the whole read returns (a MAC that commits to the
    /// count needs it before the first entry).
    fn count(&mut self) -> PageFuture<'_, u64>;

    /// The next entries in key order: at least one, and no more than
    /// `max_bytes` of keys and values unless a single entry is larger; empty
    /// once the read is complete.
    fn next_page(&mut self, max_bytes: usize) -> PageFuture<'_, Vec<KeyValue>>;
}

/// Pages over a result read whole.
pub struct Loaded(pub VecDeque<KeyValue>);

impl Pages for Loaded {
    fn count(&mut self) -> PageFuture<'_, u64> {
        let count = self.0.len() as u64;
        Box::pin(async move { Ok(count) })
    }

    fn next_page(&mut self, max_bytes: usize) -> PageFuture<'_, Vec<KeyValue>> {
        let mut page = Vec::new();
        fill_page(&mut self.0, &mut page, max_bytes);
        Box::pin(async move { Ok(page) })
    }
}

/// Moves entries from the front of `held` to the end of `page` while the
/// page stays within `max_bytes` of keys and values (it always takes one
/// into an empty page). Returns whether the page is full: `held` still
/// has entries. Every [`Pages`] cuts its pages with it.
pub fn fill_page(
    held: &mut VecDeque<KeyValue>,
    page: &mut Vec<KeyValue>,
    max_bytes: usize,
) -> bool {
    let mut bytes: usize = page.iter().map(|kv| kv.stored_len() as usize).sum();
    while let Some(kv) = held.front() {
        let len = kv.stored_len() as usize;
        if !page.is_empty() && bytes + len > max_bytes {
            return true;
        }
        bytes += len;
        page.extend(held.pop_front());
    }
    false
}

/// One stored entry with its namespace: the unit of export, import and copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The namespace.
    pub client: ClientId,
    /// The key, its version and value.
    pub kv: KeyValue,
}

/// Why a [`Bulk::load`] wrote nothing.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The backend failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The key already holds something else: loading never overwrites.
    #[error("key {key:?} of client {client} already holds version {existing}, not the loaded version {loaded} (or a different value)")]
    Mismatch {
        /// The namespace (short hex).
        client: String,
        /// The key.
        key: String,
        /// Its version in the store.
        existing: i64,
        /// The version being loaded.
        loaded: i64,
    },
}

/// Whole-store access for backup, migration and verification, beside the
/// protocol path (which never uses it).
///
/// The contract every backend keeps:
/// - **Scan** returns entries in (client bytes, key bytes) order, at most
///   `limit`, strictly after `after`; the empty result means the end. Each
///   call reads one snapshot (a scan of a live store is consistent per page).
/// - **Load** writes entries with their versions as given, bypassing the +1
///   rule, into keys that do not exist; an entry identical to what is stored
///   is skipped (so an interrupted import can simply be run again); any other
///   existing entry fails the whole call with [`LoadError::Mismatch`] and
///   nothing of it is written. Quota usage is kept right; the quota itself is
///   not enforced (a backup is restored whole). Returns how many were written.
pub trait Bulk: Store {
    /// Reads the next page of the whole store.
    fn scan(
        &self,
        after: Option<(ClientId, String)>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Entry>, StoreError>> + Send;

    /// Writes entries into missing keys, atomically; see the trait's contract.
    fn load(&self, entries: Vec<Entry>) -> impl Future<Output = Result<u64, LoadError>> + Send;
}

impl<S: Bulk> Bulk for Arc<S> {
    fn scan(
        &self,
        after: Option<(ClientId, String)>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Entry>, StoreError>> + Send {
        (**self).scan(after, limit)
    }

    fn load(&self, entries: Vec<Entry>) -> impl Future<Output = Result<u64, LoadError>> + Send {
        (**self).load(entries)
    }
}

/// Whether a put whose commit was in doubt (the connection failed while the
/// backend may have applied it) has in fact been applied: a retry found every
/// key at exactly the put's version and value, which is the state a commit of
/// that put leaves and no conflicting writer can produce without writing the
/// same bytes. Remote backends use it to report such a put committed instead
/// of a conflict with itself. Only for puts known to be in doubt: an ordinary
/// duplicate put is a conflict, as the protocol says.
pub fn already_applied(put: &ValidPut, conflicts: &[KeyValue]) -> bool {
    !put.kvs().is_empty()
        && put.kvs().len() == conflicts.len()
        && put.kvs().iter().zip(conflicts).all(|(a, b)| a == b)
}

/// The smallest byte string greater than every string starting with
/// `prefix`, or `None` when there is none (empty or all `0xff`): the exclusive
/// end of a literal prefix scan in any byte-ordered engine.
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// A shared store is a store.
impl<S: Store> Store for Arc<S> {
    fn put(&self, put: ValidPut) -> impl Future<Output = Result<PutOutcome, StoreError>> + Send {
        (**self).put(put)
    }

    fn get(
        &self,
        client: ClientId,
        prefix: String,
    ) -> impl Future<Output = Result<Vec<KeyValue>, StoreError>> + Send {
        (**self).get(client, prefix)
    }

    fn usage(&self, client: ClientId) -> impl Future<Output = Result<u64, StoreError>> + Send {
        (**self).usage(client)
    }

    fn totals(&self) -> impl Future<Output = Result<Totals, StoreError>> + Send {
        (**self).totals()
    }

    fn pages(
        &self,
        client: ClientId,
        prefix: String,
    ) -> impl Future<Output = Result<Box<dyn Pages>, StoreError>> + Send {
        (**self).pages(client, prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_is_the_least_upper_bound() {
        assert_eq!(prefix_end(b""), None);
        assert_eq!(prefix_end(b"a"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(b"\xff\xff"), None);
        assert_eq!(prefix_end(b"ab%"), Some(b"ab&".to_vec()));
    }

    #[test]
    fn already_applied_needs_every_key_exactly() {
        use crate::conformance::{client, kv, put};
        let p = put(client(1), vec![kv("a", 1, b"x"), kv("b", 0, b"y")]);
        assert!(already_applied(&p, &[kv("a", 1, b"x"), kv("b", 0, b"y")]));
        assert!(!already_applied(&p, &[kv("a", 1, b"x")]));
        assert!(!already_applied(&p, &[kv("a", 1, b"x"), kv("b", 0, b"z")]));
        assert!(!already_applied(&p, &[kv("a", 0, b"x"), kv("b", 0, b"y")]));
        assert!(!already_applied(&put(client(1), vec![]), &[]));
    }
}
