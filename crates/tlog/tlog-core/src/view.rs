//! A client's verified view of one log (tlog.md §8.1–§8.2): the latest
//! accepted checkpoint, kept verbatim (it is evidence), checked against
//! every newer one, persisted as bytes the caller writes crash-safely.
//!
//! State bytes: `"LKVW" ‖ u8 1 ‖ u8 flags (bit0 compromised) ‖ blob32 note ‖
//! u64 verified entries size ‖ u8 n ‖ n × 32 compact range`.

use crate::checkpoint::Checkpoint;
use crate::evidence::Evidence;
use crate::merkle::{self, CompactRange, Hash, ProofError};
use crate::note::{KeyType, Note, MAX_NOTE};
use crate::policy::{Policy, VerifyError};
use crate::wire::{Reader, Writer};

const MAGIC: &[u8; 4] = b"LKVW";

/// Why an offered checkpoint is not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ViewError {
    /// Signatures, body or policy.
    #[error(transparent)]
    Policy(#[from] VerifyError),
    /// Another log's checkpoint.
    #[error("checkpoint of {got}, not of {want}")]
    WrongOrigin {
        /// The view's origin.
        want: String,
        /// The offered one.
        got: String,
    },
    /// The proof does not connect the stored and offered trees (blame the
    /// source; a bad proof alone is not evidence).
    #[error("bad proof: {0}")]
    BadProof(ProofError),
    /// A smaller tree without a proof: a rollback attempt.
    #[error("offered size {offered} is below the verified {stored}")]
    Rollback {
        /// Verified size.
        stored: u64,
        /// Offered size.
        offered: u64,
    },
    /// Two validly signed, inconsistent checkpoints: the log equivocated.
    /// The evidence (LKEV) is attached.
    #[error("the log signed two inconsistent checkpoints")]
    Inconsistent(Vec<u8>),
    /// The view holds evidence against this log.
    #[error("the log is compromised: it equivocated")]
    LogCompromised,
    /// A log over 2^63 − 1 entries.
    #[error("tree size beyond 2^63 - 1")]
    TooLarge,
}

/// Why saved state does not restore.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    /// Not a view state.
    #[error("malformed view state: {0}")]
    Malformed(&'static str),
    /// Its checkpoint no longer passes the policy's signature check.
    #[error("the saved checkpoint does not verify: {0}")]
    Checkpoint(String),
}

/// What an accepted offer did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Offer {
    /// The first checkpoint, or a larger consistent one.
    Advanced,
    /// The same tree (cosignatures merged).
    Unchanged,
    /// An older tree consistent with the stored one (ignored).
    Older,
}

/// The verified state of one log.
#[derive(Debug, Clone)]
pub struct LogView {
    policy: Policy,
    origin: String,
    latest: Option<(Note, Checkpoint)>,
    entries: CompactRange,
    compromised: bool,
}

impl LogView {
    /// A view of `origin` that trusts the first checkpoint `policy` accepts.
    pub fn new(policy: Policy, origin: &str) -> LogView {
        LogView {
            policy,
            origin: origin.to_string(),
            latest: None,
            entries: CompactRange::new(),
            compromised: false,
        }
    }

    /// The latest verified checkpoint.
    pub fn checkpoint(&self) -> Option<&Checkpoint> {
        self.latest.as_ref().map(|(_, c)| c)
    }

    /// The latest verified note, verbatim.
    pub fn note(&self) -> Option<&Note> {
        self.latest.as_ref().map(|(n, _)| n)
    }

    /// Whether evidence against the log was seen.
    pub fn compromised(&self) -> bool {
        self.compromised
    }

    /// The proof to fetch before offering a checkpoint of `new_size`.
    pub fn needs_proof(&self, new_size: u64) -> Option<(u64, u64)> {
        let stored = self.checkpoint()?.size;
        (stored > 0 && new_size != stored).then_some((stored.min(new_size), stored.max(new_size)))
    }

    /// Offers a checkpoint note at `now` with the consistency proof between
    /// the stored size and its size (either direction; empty when none is
    /// needed).
    pub fn offer(&mut self, note: &[u8], proof: &[Hash], now: u64) -> Result<Offer, ViewError> {
        if self.compromised {
            return Err(ViewError::LogCompromised);
        }
        let verified = self.policy.verify(note, now)?;
        let offered = verified.checkpoint;
        if offered.origin != self.origin {
            return Err(ViewError::WrongOrigin {
                want: self.origin.clone(),
                got: offered.origin,
            });
        }
        if offered.size > merkle::MAX_SIZE {
            return Err(ViewError::TooLarge);
        }
        let Some((stored_note, stored)) = &self.latest else {
            self.latest = Some((verified.note, offered));
            return Ok(Offer::Advanced);
        };
        use std::cmp::Ordering;
        match offered.size.cmp(&stored.size) {
            Ordering::Greater => {
                merkle::verify_consistency(
                    stored.size,
                    offered.size,
                    &stored.root,
                    &offered.root,
                    proof,
                )
                .map_err(ViewError::BadProof)?;
                self.latest = Some((verified.note, offered));
                Ok(Offer::Advanced)
            }
            Ordering::Equal if offered.root == stored.root => {
                let mut merged = stored_note.clone();
                for line in verified.note.signatures() {
                    let newer = merged
                        .signatures()
                        .iter()
                        .find(|l| l.name == line.name && l.id == line.id)
                        .is_none_or(|old| old.cosignature_time() < line.cosignature_time());
                    if newer {
                        merged.add(line.clone());
                    }
                }
                let checkpoint = stored.clone();
                self.latest = Some((merged, checkpoint));
                Ok(Offer::Unchanged)
            }
            Ordering::Equal => {
                let evidence = self.evidence(stored_note, &verified.note, offered.root);
                self.compromised = true;
                Err(ViewError::Inconsistent(evidence))
            }
            Ordering::Less if proof.is_empty() && offered.size > 0 => Err(ViewError::Rollback {
                stored: stored.size,
                offered: offered.size,
            }),
            Ordering::Less => {
                merkle::verify_consistency(
                    offered.size,
                    stored.size,
                    &offered.root,
                    &stored.root,
                    proof,
                )
                .map_err(ViewError::BadProof)?;
                Ok(Offer::Older)
            }
        }
    }

    fn evidence(&self, a: &Note, b: &Note, root_b: Hash) -> Vec<u8> {
        let key = self
            .policy
            .log_keys()
            .iter()
            .find(|k| {
                k.key_type() == KeyType::Ed25519
                    && a.signatures().iter().any(|l| k.verify_line(a.text(), l))
                    && b.signatures().iter().any(|l| k.verify_line(b.text(), l))
            })
            .cloned();
        key.and_then(|key| Evidence::build(&key, a, b, root_b, Vec::new()).ok())
            .unwrap_or_default()
    }

    /// Takes evidence (LKEV) against the log: if it verifies with the
    /// view's log keys, the view refuses every later checkpoint.
    pub fn report_evidence(
        &mut self,
        evidence: &[u8],
    ) -> Result<(), crate::evidence::EvidenceError> {
        let ev = Evidence::verify(evidence, self.policy.log_keys())?;
        let origin = Checkpoint::parse(ev.note_a.text()).map(|c| c.origin);
        if origin.as_deref() == Ok(self.origin.as_str()) {
            self.compromised = true;
        }
        Ok(())
    }

    /// Checks `leaf` at `index` against the latest checkpoint.
    pub fn verify_inclusion(
        &self,
        index: u64,
        leaf: &Hash,
        path: &[Hash],
    ) -> Result<(), ProofError> {
        let (size, root) = self
            .checkpoint()
            .map(|c| (c.size, c.root))
            .unwrap_or((0, merkle::EMPTY_ROOT));
        merkle::verify_inclusion(index, size, leaf, path, &root)
    }

    /// The compact range of the entries verified so far (§8.3).
    pub fn entries(&self) -> &CompactRange {
        &self.entries
    }

    /// Records verified entries (the caller checked them against the
    /// latest checkpoint, §8.3).
    pub fn set_entries(&mut self, range: CompactRange) {
        self.entries = range;
    }

    /// The state bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.bytes(MAGIC);
        w.u8(1);
        w.u8(u8::from(self.compromised));
        w.blob32(&self.note().map(Note::to_bytes).unwrap_or_default());
        w.u64(self.entries.size());
        w.proof(self.entries.hashes());
        w.into_inner()
    }

    /// Restores saved state under `policy` (the note is verified again,
    /// without freshness: it was accepted when it was fresh).
    pub fn restore(policy: Policy, origin: &str, state: &[u8]) -> Result<LogView, StateError> {
        let mut r = Reader::new(state);
        let bad = |_| StateError::Malformed("truncated or overlong field");
        if r.bytes(4).map_err(bad)? != MAGIC || r.u8().map_err(bad)? != 1 {
            return Err(StateError::Malformed("not an LKVW v1 state"));
        }
        let flags = r.u8().map_err(bad)?;
        if flags > 1 {
            return Err(StateError::Malformed("unknown flags"));
        }
        let note = r.blob32(MAX_NOTE).map_err(bad)?;
        let size = r.u64().map_err(bad)?;
        let hashes = r.proof(64).map_err(bad)?;
        r.end()
            .map_err(|_| StateError::Malformed("trailing bytes"))?;
        let entries = CompactRange::from_parts(size, hashes)
            .map_err(|_| StateError::Malformed("compact range does not match its size"))?;
        let mut view = LogView::new(policy, origin);
        view.compromised = flags & 1 == 1;
        view.entries = entries;
        if !note.is_empty() {
            let parsed = Note::parse(&note).map_err(|e| StateError::Checkpoint(e.to_string()))?;
            let verified = parsed
                .verify(view.policy.log_keys())
                .map_err(|e| StateError::Checkpoint(e.to_string()))?;
            let checkpoint = Checkpoint::parse(verified.text())
                .map_err(|e| StateError::Checkpoint(e.to_string()))?;
            if checkpoint.origin != origin || size > checkpoint.size {
                return Err(StateError::Checkpoint(
                    "not this log's, or behind its entries".into(),
                ));
            }
            view.latest = Some((parsed, checkpoint));
        }
        Ok(view)
    }
}
