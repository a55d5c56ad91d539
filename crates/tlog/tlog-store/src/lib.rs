//! Storage for transparency logs (tlog.md §6.4–§6.6): the [`LogStore`]
//! contract, its [`conformance`] suite (feature `conformance`,
//! `tlog_conformance_tests!`), and the embedded redb backend
//! ([`RedbLogStore`]). Same pattern as `lss-store`: a backend decides
//! nothing itself: the tree is grown only by `tlog_core::tile::integrate`,
//! inside the append's transaction, so backends cannot drift.

use std::future::Future;

use tlog_core::merkle::{CompactRange, Hash};

#[cfg(feature = "conformance")]
pub mod conformance;
pub mod redb;
pub mod rules;

pub use crate::redb::RedbLogStore;

/// `H(origin)`.
pub type LogId = Hash;

/// Largest entry (the bundle encoding has a u16 length).
pub const MAX_ENTRY: usize = 65_535;
/// Checkpoints kept per log besides the latest.
pub const CHECKPOINT_HISTORY: u64 = 1024;
/// Most entries one `entries` read returns.
pub const MAX_ENTRIES_READ: u64 = 1024;

/// Per-log options, fixed at creation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LogOptions {
    /// An entry already present gets its existing index (`duplicate`).
    pub dedup: bool,
    /// Keep `leaf hash → first index` (for `inclusion?hash=`).
    pub index_leaves: bool,
}

/// A log's condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Appending and signing.
    Active,
    /// Stopped by the anti-rollback rules until an operator acts.
    Frozen,
    /// Evidence of equivocation is held: read-only.
    Equivocated,
    /// A validator rejected an entry: read-only.
    Invalid,
}

impl Status {
    /// Its stored code.
    pub fn byte(self) -> u8 {
        match self {
            Status::Active => 0,
            Status::Frozen => 1,
            Status::Equivocated => 2,
            Status::Invalid => 3,
        }
    }

    /// The status of a stored code.
    pub fn from_byte(b: u8) -> Option<Status> {
        Some(match b {
            0 => Status::Active,
            1 => Status::Frozen,
            2 => Status::Equivocated,
            3 => Status::Invalid,
            _ => return None,
        })
    }
}

/// A log as one snapshot shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogState {
    /// Its name.
    pub origin: String,
    /// Entries committed.
    pub size: u64,
    /// `MTH` at that size.
    pub root: Hash,
    /// The compact range at that size.
    pub range: CompactRange,
    /// Its condition.
    pub status: Status,
    /// The latest stored checkpoint's size (0 if none).
    pub checkpoint_size: u64,
    /// Its options.
    pub options: LogOptions,
}

/// Where an appended entry went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Its index.
    pub index: u64,
    /// It was already in the log (dedup): the earlier index.
    pub duplicate: bool,
}

/// What `put_checkpoint` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutCheckpoint {
    /// Stored as the latest.
    Stored,
    /// The same tree: signature lines merged into the stored note.
    Merged,
    /// Smaller than the latest stored: not stored.
    Older {
        /// The latest stored size.
        latest: u64,
    },
}

/// Why a store operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The backend cannot serve now; nothing was written; retry.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// Stored bytes do not decode or do not agree (C5).
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// No such log.
    #[error("unknown log")]
    UnknownLog,
    /// The log does not accept appends now.
    #[error("log is {0:?}")]
    NotActive(Status),
    /// An entry over 65,535 bytes, or a log past 2^63 − 1 entries.
    #[error("too large: {0}")]
    TooLarge(&'static str),
    /// A checkpoint of the stored size with another root, or one beyond
    /// the stored tree: the caller builds evidence or freezes.
    #[error("checkpoint conflicts with the stored tree (stored root at that size differs, or size beyond the tree)")]
    CheckpointConflict,
    /// `witness_cas` found another size.
    #[error("witness record is at size {size}")]
    Mismatch {
        /// The stored size (0 if none).
        size: u64,
    },
    /// An import that does not start at the stored size.
    #[error("import conflict: the log holds {have} entries")]
    Conflict {
        /// The stored size.
        have: u64,
    },
    /// The note does not parse.
    #[error("bad note: {0}")]
    BadNote(String),
    /// A proof asked for sizes or indices the log does not have.
    #[error("out of range: {0}")]
    OutOfRange(String),
}

/// The storage contract (tlog.md §6.5); [`conformance`] tests this text.
///
/// - `create_log` is idempotent (`log_id = H(origin)`); options are fixed
///   by the first call.
/// - `append` assigns the next indices, in order, to the batch, atomically:
///   all or nothing; with dedup an entry already present (or earlier in the
///   batch) gets its existing index. `Ok` means durable (C4). Only an
///   `Active` log appends.
/// - `import` (followers) stores entries the caller verified against the
///   origin's checkpoint at exactly `start`: atomically, all or nothing,
///   each at its own index (no dedup); `Conflict { have }` when `start` is
///   not the stored size, and nothing changes. Durable on `Ok`.
/// - Reads come from one committed snapshot: `state`, `tile` (full or the
///   current partial), `entries` (≤ 1,024), `leaf_index`, checkpoints.
/// - `put_checkpoint` stores a note iff its size ≥ the latest stored and
///   its root is the tree's root at that size (else `CheckpointConflict`);
///   the same tree merges signature lines; never overwrites; keeps the
///   latest and the 1,024 before it.
/// - `witness_cas` is an atomic compare-and-set of the witness record;
///   `Mismatch { size }` when the stored size (0 if none) differs.
/// - `put_evidence` is idempotent; `set_status` durable.
/// - `Unavailable` leaves data unchanged, and the store keeps serving.
pub trait LogStore: Send + Sync + 'static {
    /// Creates (or finds) the log of `origin`.
    fn create_log(
        &self,
        origin: &str,
        options: LogOptions,
    ) -> impl Future<Output = Result<LogId, StoreError>> + Send;

    /// Appends a batch; durable on `Ok`.
    fn append(
        &self,
        log: LogId,
        entries: Vec<Vec<u8>>,
    ) -> impl Future<Output = Result<Vec<Appended>, StoreError>> + Send;

    /// Imports verified entries at `start` (= the stored size); durable on
    /// `Ok`.
    fn import(
        &self,
        log: LogId,
        start: u64,
        entries: Vec<Vec<u8>>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The log's state.
    fn state(&self, log: LogId) -> impl Future<Output = Result<LogState, StoreError>> + Send;

    /// Hash tile (`level`, `index`): full, or the current partial; `None`
    /// if it does not exist yet.
    fn tile(
        &self,
        log: LogId,
        level: u8,
        index: u64,
    ) -> impl Future<Output = Result<Option<Vec<Hash>>, StoreError>> + Send;

    /// Entries `[start, end)` (at most 1,024, and not beyond the size).
    fn entries(
        &self,
        log: LogId,
        start: u64,
        end: u64,
    ) -> impl Future<Output = Result<Vec<Vec<u8>>, StoreError>> + Send;

    /// The first index of a leaf hash (logs with dedup or index_leaves).
    fn leaf_index(
        &self,
        log: LogId,
        leaf: Hash,
    ) -> impl Future<Output = Result<Option<u64>, StoreError>> + Send;

    /// Stores a signed checkpoint of (`size`, `root`).
    fn put_checkpoint(
        &self,
        log: LogId,
        size: u64,
        root: Hash,
        note: Vec<u8>,
    ) -> impl Future<Output = Result<PutCheckpoint, StoreError>> + Send;

    /// The stored checkpoint of exactly `size`, or the latest (`None`).
    fn checkpoint(
        &self,
        log: LogId,
        size: Option<u64>,
    ) -> impl Future<Output = Result<Option<Vec<u8>>, StoreError>> + Send;

    /// Compare-and-set of the witness record.
    fn witness_cas(
        &self,
        log: LogId,
        expected: u64,
        size: u64,
        root: Hash,
        note: Vec<u8>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The witness record: (size, root, note).
    fn witnessed(
        &self,
        log: LogId,
    ) -> impl Future<Output = Result<Option<(u64, Hash, Vec<u8>)>, StoreError>> + Send;

    /// Keeps evidence (idempotent).
    fn put_evidence(
        &self,
        log: LogId,
        observed: u64,
        evidence: Vec<u8>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Every evidence blob held for the log.
    fn evidence(&self, log: LogId)
        -> impl Future<Output = Result<Vec<Vec<u8>>, StoreError>> + Send;

    /// PATH(`index`, size `size`) from stored tiles (`size` ≤ the log's).
    fn inclusion_proof(
        &self,
        log: LogId,
        index: u64,
        size: u64,
    ) -> impl Future<Output = Result<Vec<Hash>, StoreError>> + Send;

    /// PROOF(`old`, size `new`) from stored tiles (`old` ≤ `new` ≤ the
    /// log's size).
    fn consistency_proof(
        &self,
        log: LogId,
        old: u64,
        new: u64,
    ) -> impl Future<Output = Result<Vec<Hash>, StoreError>> + Send;

    /// Sets the log's status.
    fn set_status(
        &self,
        log: LogId,
        status: Status,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}
