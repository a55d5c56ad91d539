//! The client's checks of a verifiable reply, split into what the server's
//! signature makes provable to anyone (a [`Violation`], which becomes
//! evidence) and what only the client can know (the nonce it sent, the
//! put it made, whether its checkpoint was acknowledged).

use sha2::{Digest, Sha256};
use tlog_core::merkle::CompactRange;
use tlog_core::wire::{Reader, Writer};
use tlog_core::Hash;

use crate::bundle::Bundle;
use crate::entry::{answer_digest, writes_digest};
use crate::state::{StateError, StateLeaf};
use crate::statement::{note_hash, Seen, Statement, StatementError};

/// The last checkpoint a client verified, with the log's compact range at
/// its size: what the next reply must extend. Persist it to keep detection
/// across restarts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trusted {
    note: Vec<u8>,
    statement: Statement,
    range: CompactRange,
}

/// Why stored trusted state does not load.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrustedError {
    /// Not the encoding.
    #[error("malformed trusted-state file: {0}")]
    Malformed(String),
    /// Its note is not signed by the server.
    #[error(transparent)]
    Statement(#[from] StatementError),
    /// Its range does not hash to the signed root.
    #[error("the stored compact range does not match the signed root")]
    Range,
}

const TRUSTED_MAGIC: &[u8; 4] = b"LKT1";

impl Trusted {
    /// The signed checkpoint note.
    pub fn note(&self) -> &[u8] {
        &self.note
    }

    /// What it states.
    pub fn statement(&self) -> &Statement {
        &self.statement
    }

    /// The log's compact range at its size.
    pub fn range(&self) -> &CompactRange {
        &self.range
    }

    /// What the client sends as `seen`.
    pub fn seen(&self) -> Seen {
        Seen {
            size: self.statement.size,
            note: note_hash(&self.note),
        }
    }

    /// Binary form: magic, the note, the range.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.bytes(TRUSTED_MAGIC);
        w.blob32(&self.note);
        w.u64(self.range.size());
        w.proof(self.range.hashes());
        w.into_inner()
    }

    /// Parses and re-verifies stored state against `server_id`.
    pub fn decode(bytes: &[u8], server_id: &[u8; 33]) -> Result<Self, TrustedError> {
        let malformed = |e: &dyn std::fmt::Display| TrustedError::Malformed(e.to_string());
        let mut r = Reader::new(bytes);
        if r.bytes(4).map_err(|e| malformed(&e))? != TRUSTED_MAGIC {
            return Err(malformed(&"bad magic"));
        }
        let note = r
            .blob32(tlog_core::note::MAX_NOTE)
            .map_err(|e| malformed(&e))?;
        let size = r.u64().map_err(|e| malformed(&e))?;
        let hashes = r.proof(64).map_err(|e| malformed(&e))?;
        r.end().map_err(|e| malformed(&e))?;
        let range = CompactRange::from_parts(size, hashes).map_err(|e| malformed(&e))?;
        Self::new(note, server_id, range)
    }

    /// Checks that `range` is the signed log's range.
    pub fn new(
        note: Vec<u8>,
        server_id: &[u8; 33],
        range: CompactRange,
    ) -> Result<Self, TrustedError> {
        let statement = Statement::verify(&note, server_id)?;
        if range.size() != statement.size || range.root() != statement.root {
            return Err(TrustedError::Range);
        }
        Ok(Trusted {
            note,
            statement,
            range,
        })
    }
}

/// What the client expects a reply to be about.
#[derive(Debug, Clone, Copy)]
pub enum Expect<'a> {
    /// Its put, whose entry must be the log's last.
    Put {
        /// The kvs it wrote, as leaves.
        written: &'a [StateLeaf],
        /// The signature it sent with them, which the entry must carry.
        client_sig: Option<&'a [u8; 64]>,
    },
    /// Its read.
    Read {
        /// The prefix asked for.
        prefix: &'a str,
        /// The nonce sent.
        nonce: &'a [u8],
        /// The entries returned, as leaves.
        answer: &'a [StateLeaf],
    },
}

/// A contradiction in what the server signed: provable to anyone.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    /// After acknowledging a checkpoint, the server signed a smaller log.
    #[error(
        "rollback: the server signed a log of {later} entries after acknowledging one of {earlier}"
    )]
    Rollback {
        /// The acknowledged size.
        earlier: u64,
        /// The later size.
        later: u64,
    },
    /// Two signed trees disagree at the same size.
    #[error("fork: the server signed two different logs of {size} entries")]
    Fork {
        /// Where they disagree.
        size: u64,
    },
    /// The signed entries do not produce the signed root.
    #[error("broken log: {0}")]
    BrokenLog(&'static str),
    /// The signed state is not the last entry's.
    #[error("the signed state is not the state the log's last entry records")]
    FalseState,
    /// The signed answer is not the complete run of its prefix.
    #[error("false answer: {0}")]
    FalseAnswer(StateError),
    /// The signed bundle does not decode.
    #[error("the signed bundle is malformed")]
    MalformedBundle,
}

/// Why a reply is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    /// The server contradicted itself; [`crate::evidence::Evidence`] can prove it.
    #[error(transparent)]
    Violation(Violation),
    /// The reply cannot be trusted, but nothing is provable (no valid
    /// signature, wrong nonce, checkpoint not acknowledged…).
    #[error("unverifiable reply: {0}")]
    Unverifiable(String),
}

fn unverifiable(why: impl std::fmt::Display) -> Rejected {
    Rejected::Unverifiable(why.to_string())
}

/// Checks a reply (`note` and `bundle`) from `server_id` for namespace
/// `client` against the client's `trusted` checkpoint; returns the new one.
pub fn check(
    server_id: &[u8; 33],
    client: &[u8; 33],
    trusted: Option<&Trusted>,
    note: &[u8],
    bundle: &[u8],
    expect: Expect<'_>,
) -> Result<Trusted, Rejected> {
    let statement = Statement::verify(note, server_id).map_err(unverifiable)?;
    if &statement.client != client {
        return Err(unverifiable("the checkpoint is for another namespace"));
    }
    if <[u8; 32]>::from(Sha256::digest(bundle)) != statement.bundle {
        return Err(unverifiable("the bundle is not the one signed"));
    }
    if let Some(t) = trusted {
        if statement.seen != Some(t.seen()) {
            return Err(unverifiable(
                "the server did not acknowledge the client's last checkpoint",
            ));
        }
    }
    let answer = match expect {
        Expect::Read { prefix, answer, .. } => Some((prefix, answer)),
        Expect::Put { .. } => None,
    };
    let (range, last) = provable(&statement, bundle, trusted, answer)?;
    match expect {
        Expect::Put {
            written,
            client_sig,
        } => {
            let last = last.ok_or_else(|| unverifiable("a put receipt with an empty log"))?;
            if last.writes != writes_digest(written) {
                return Err(unverifiable("the receipt's last entry is not this put"));
            }
            if client_sig.is_some() && last.client_sig.as_ref() != client_sig {
                return Err(unverifiable(
                    "the receipt's entry does not carry the client's signature",
                ));
            }
        }
        Expect::Read { nonce, .. } => {
            if statement.nonce.as_deref() != Some(nonce) {
                return Err(unverifiable(
                    "the checkpoint does not carry the read's nonce",
                ));
            }
        }
    }
    Ok(Trusted {
        note: note.to_vec(),
        statement,
        range,
    })
}

/// The checks anyone can repeat from signed data: the log's entries reach
/// the signed root and agree with `earlier` (a checkpoint of the same
/// server); a rollback counts only when the statement acknowledges
/// `earlier`; an answer must be the complete, signed run of its prefix.
/// Returns the log's compact range and last entry.
pub(crate) fn provable(
    statement: &Statement,
    bundle: &[u8],
    earlier: Option<&Trusted>,
    answer: Option<(&str, &[StateLeaf])>,
) -> Result<(CompactRange, Option<crate::entry::Entry>), Rejected> {
    let bundle =
        Bundle::decode(bundle).map_err(|_| Rejected::Violation(Violation::MalformedBundle))?;
    let violation = Rejected::Violation;
    if let Some(e) = earlier {
        let acknowledged = statement.seen == Some(e.seen());
        if acknowledged && statement.size < e.statement.size {
            return Err(violation(Violation::Rollback {
                earlier: e.statement.size,
                later: statement.size,
            }));
        }
        if statement.size == e.statement.size && statement.root != e.statement.root {
            return Err(violation(Violation::Fork {
                size: statement.size,
            }));
        }
    }
    let mut range = bundle.from.clone();
    let expected = statement.size.checked_sub(range.size());
    if expected != Some(bundle.entries.len() as u64) {
        return Err(violation(Violation::BrokenLog(
            "the entries do not span the bundle's range to the signed size",
        )));
    }
    if statement.size > 0 && bundle.entries.is_empty() {
        return Err(violation(Violation::BrokenLog("the last entry is missing")));
    }
    let at_earlier = |range: &CompactRange| -> Result<(), Rejected> {
        match earlier {
            Some(e) if range.size() == e.statement.size && range.root() != e.statement.root => {
                Err(violation(Violation::Fork { size: range.size() }))
            }
            _ => Ok(()),
        }
    };
    at_earlier(&range)?;
    for entry in &bundle.entries {
        if let Some(sig) = &entry.client_sig {
            if !crate::entry::verify_put(&statement.client, &entry.writes, sig) {
                return Err(violation(Violation::BrokenLog(
                    "an entry carries a client signature that does not verify: a write the client did not sign",
                )));
            }
        }
        if entry.seq != range.size() {
            return Err(violation(Violation::BrokenLog(
                "an entry is out of sequence",
            )));
        }
        if entry.prev_root != range.root() {
            return Err(violation(Violation::BrokenLog(
                "an entry does not name the root before it",
            )));
        }
        range.push(entry.leaf());
        at_earlier(&range)?;
    }
    if range.root() != statement.root {
        return Err(violation(Violation::BrokenLog(
            "the entries do not hash to the signed root",
        )));
    }
    if let Some(e) = earlier {
        if range.size() > e.statement.size && bundle.from.size() > e.statement.size {
            return Err(unverifiable(
                "the bundle starts after the client's checkpoint (too far behind to check)",
            ));
        }
    }
    let last = bundle.entries.last().copied();
    if let Some(last) = &last {
        if (last.state_count, last.state_root) != (statement.state_count, statement.state_root) {
            return Err(violation(Violation::FalseState));
        }
    }
    if let Some((prefix, leaves)) = answer {
        let Some(claim) = &bundle.answer else {
            return Err(unverifiable("a read reply without an answer proof"));
        };
        if claim.prefix != prefix || claim.digest != answer_digest(leaves) {
            return Err(unverifiable(
                "the signed answer is not the entries received",
            ));
        }
        claim
            .proof
            .verify(prefix, leaves, statement.state_count, &statement.state_root)
            .map_err(|e| violation(Violation::FalseAnswer(e)))?;
    }
    Ok((range, last))
}

/// The root and count of a full state a client read (for comparing a full
/// `Get("")` with a signed state).
pub fn state_of(leaves: &[StateLeaf]) -> (u64, Hash) {
    let hashes: Vec<Hash> = leaves.iter().map(StateLeaf::hash).collect();
    (hashes.len() as u64, crate::state::root_of(&hashes))
}
