//! Incremental, chunked, verified download of a log's entries (tlog.md
//! §8.3), with no I/O: the caller fetches what [`EntrySync::poll_fetch`]
//! asks for (entry bundles, and consistency proofs at check points) from any
//! source and hands the bodies back. Entries reach the application only
//! once a check point proved them part of the verified checkpoint; anything
//! that fails is discarded, and the sync resumes from the last check point,
//! from another source if the caller likes.

use crate::merkle::{leaf_hash, verify_consistency, CompactRange, Hash, ProofError};
use crate::tile::WIDTH;

/// Above this many remaining entries, check points come every
/// [`CHECK_EVERY_BUNDLES`] bundles instead of only at the end.
pub const CHECK_AT_END_BELOW: u64 = 65_536;
/// Bundles between check points on a long sync.
pub const CHECK_EVERY_BUNDLES: u64 = 16;
/// Unverified bytes held before a check point is forced.
pub const MAX_HELD_BYTES: usize = 16 << 20;

/// What to fetch next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fetch {
    /// Entry bundle `index` (`tile/entries/<index>`, `.p/<width>` when
    /// `width` < 256).
    Bundle {
        /// Bundle index.
        index: u64,
        /// Entries in it at the target size.
        width: u16,
    },
    /// A consistency proof from `old` to `new` (the target size).
    Proof {
        /// The check point size.
        old: u64,
        /// The verified checkpoint's size.
        new: u64,
    },
}

impl Fetch {
    /// The resource below the log's URL prefix that answers it: the entry
    /// bundle's tile path, or `lk/v1/consistency` (tlog.md §4.5).
    pub fn path(&self) -> String {
        match *self {
            Fetch::Bundle { index, width } => crate::tile::TileId {
                level: None,
                index,
                width,
            }
            .path(),
            Fetch::Proof { old, new } => consistency_path(old, new),
        }
    }
}

/// `lk/v1/consistency?old=<old>&size=<new>` (tlog.md §4.5).
pub fn consistency_path(old: u64, new: u64) -> String {
    format!("lk/v1/consistency?old={old}&size={new}")
}

/// The proof hashes of an `lk/v1` proof response: `headers` header lines
/// (`old M`, `size N`…), then one base64 hash per line.
pub fn proof_lines(body: &[u8], headers: usize) -> Result<Vec<Hash>, SyncError> {
    let text = std::str::from_utf8(body).map_err(|_| SyncError::ProofBody("not UTF-8"))?;
    text.lines()
        .skip(headers)
        .map(|l| {
            crate::note::b64decode(l)
                .and_then(|b| Hash::try_from(b.as_slice()).ok())
                .ok_or(SyncError::ProofBody("a line is not a base64 hash"))
        })
        .collect()
}

/// Why a fetched body was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SyncError {
    /// The starting range is beyond the target.
    #[error("the verified entries ({have}) are beyond the checkpoint ({target})")]
    Beyond {
        /// Entries held.
        have: u64,
        /// The target size.
        target: u64,
    },
    /// A bundle that does not parse as exactly `width` entries.
    #[error("malformed bundle: {0}")]
    Bundle(&'static str),
    /// The entries do not belong to the checkpoint (a lying source).
    #[error("entries do not match the checkpoint: {0}")]
    Mismatch(ProofError),
    /// An answer to something not asked.
    #[error("unexpected fetch result")]
    Unexpected,
    /// A proof response that does not parse.
    #[error("malformed proof response: {0}")]
    ProofBody(&'static str),
}

/// A sync of `[range.size(), target)`.
#[derive(Debug, Clone)]
pub struct EntrySync {
    verified: CompactRange,
    working: CompactRange,
    target: u64,
    root: Hash,
    held: Vec<(u64, Vec<u8>)>,
    held_bytes: usize,
    bundles_since_check: u64,
    awaiting: Option<Fetch>,
}

impl EntrySync {
    /// Syncs from `range` (the entries already verified) to the verified
    /// checkpoint (`size`, `root`).
    pub fn new(range: CompactRange, size: u64, root: Hash) -> Result<EntrySync, SyncError> {
        if range.size() > size {
            return Err(SyncError::Beyond {
                have: range.size(),
                target: size,
            });
        }
        Ok(EntrySync {
            working: range.clone(),
            verified: range,
            target: size,
            root,
            held: Vec::new(),
            held_bytes: 0,
            bundles_since_check: 0,
            awaiting: None,
        })
    }

    /// Whether every entry up to the target is verified.
    pub fn done(&self) -> bool {
        self.verified.size() == self.target
    }

    /// The verified range (persist it with the view).
    pub fn range(&self) -> &CompactRange {
        &self.verified
    }

    fn at_check_point(&self) -> bool {
        let remaining = self.target - self.working.size();
        !self.held.is_empty()
            && remaining > 0
            && remaining > CHECK_AT_END_BELOW
            && (self.bundles_since_check >= CHECK_EVERY_BUNDLES
                || self.held_bytes >= MAX_HELD_BYTES)
    }

    /// The next thing to fetch, or `None` when done.
    pub fn poll_fetch(&mut self) -> Option<Fetch> {
        if self.done() {
            return None;
        }
        let fetch = if self.at_check_point() {
            Fetch::Proof {
                old: self.working.size(),
                new: self.target,
            }
        } else {
            let index = self.working.size() / WIDTH;
            let width = if (index + 1) * WIDTH <= self.target {
                256
            } else {
                (self.target % WIDTH) as u16
            };
            Fetch::Bundle { index, width }
        };
        self.awaiting = Some(fetch);
        Some(fetch)
    }

    /// Hands back the body fetched for `fetch` (from [`Fetch::path`]):
    /// what [`EntrySync::handle_bundle`] or [`EntrySync::handle_proof`]
    /// releases.
    pub fn handle(&mut self, fetch: &Fetch, body: &[u8]) -> Result<Vec<(u64, Vec<u8>)>, SyncError> {
        match fetch {
            Fetch::Bundle { .. } => self.handle_bundle(body),
            Fetch::Proof { .. } => self.handle_proof(&proof_lines(body, 2)?),
        }
    }

    /// Takes a bundle's body; returns the entries (index, bytes) that are
    /// now verified, in order.
    pub fn handle_bundle(&mut self, body: &[u8]) -> Result<Vec<(u64, Vec<u8>)>, SyncError> {
        let Some(Fetch::Bundle { index, width }) = self.awaiting.take() else {
            return Err(SyncError::Unexpected);
        };
        let mut rest = body;
        let mut entries = Vec::with_capacity(usize::from(width));
        for _ in 0..width {
            let [a, b, tail @ ..] = rest else {
                return self.fail(SyncError::Bundle("truncated"));
            };
            let len = usize::from(u16::from_be_bytes([*a, *b]));
            if tail.len() < len {
                return self.fail(SyncError::Bundle("truncated entry"));
            }
            entries.push(&tail[..len]);
            rest = &tail[len..];
        }
        if !rest.is_empty() {
            return self.fail(SyncError::Bundle("trailing bytes"));
        }
        let first = index * WIDTH;
        for (i, entry) in entries.into_iter().enumerate() {
            let at = first + i as u64;
            if at < self.working.size() {
                continue;
            }
            self.working.push(leaf_hash(entry));
            self.held_bytes += entry.len();
            self.held.push((at, entry.to_vec()));
        }
        self.bundles_since_check += 1;
        if self.working.size() == self.target {
            if self.working.root() != self.root {
                return self.fail(SyncError::Mismatch(ProofError::Mismatch));
            }
            return Ok(self.release());
        }
        Ok(Vec::new())
    }

    /// Takes the consistency proof asked for at a check point; returns the
    /// entries it verified.
    pub fn handle_proof(&mut self, proof: &[Hash]) -> Result<Vec<(u64, Vec<u8>)>, SyncError> {
        let Some(Fetch::Proof { old, new }) = self.awaiting.take() else {
            return Err(SyncError::Unexpected);
        };
        if let Err(e) = verify_consistency(old, new, &self.working.root(), &self.root, proof) {
            return self.fail(SyncError::Mismatch(e));
        }
        Ok(self.release())
    }

    fn release(&mut self) -> Vec<(u64, Vec<u8>)> {
        self.verified = self.working.clone();
        self.held_bytes = 0;
        self.bundles_since_check = 0;
        std::mem::take(&mut self.held)
    }

    /// Discards everything unverified: the sync resumes from the last check
    /// point.
    fn fail<T>(&mut self, e: SyncError) -> Result<T, SyncError> {
        self.working = self.verified.clone();
        self.held.clear();
        self.held_bytes = 0;
        self.bundles_since_check = 0;
        self.awaiting = None;
        Err(e)
    }
}
