//! Application evidence (statechain.md §6.1): what a federation member
//! keeps and serves at `GET /v1/alerts` when the SE's log, signed by the
//! SE's key, holds an entry the members' rules refuse.
//!
//! An alert carries the signed checkpoint, the refused leaf (last) and the
//! coin's earlier leaves it was judged against, each with its PATH under
//! that checkpoint. [`Alert::verify`] checks all of it offline with only the
//! SE's verifier key: the note's signature, every inclusion proof, then a
//! replay of the rules over the cited leaves in log order, which must
//! accept every leaf but the last and refuse the last for the stated rule.
//!
//! What that proves depends on the rule. A forked coin chain (two entries
//! with one `prev`), a repeated server nonce or commitment, a bad count or
//! a closed coin reopened are shown by the cited leaves alone. Rules about
//! what is *missing* (a `seq` gap, an entry for a coin never opened, an
//! auth signature under a key a skipped transfer would explain) rest on
//! the cited leaves being the coin's whole history below the refused one;
//! a verifier who doubts that checks it against the log itself.

use serde::{Deserialize, Serialize};
use tlog_core::merkle::{self, Hash};
use tlog_core::note::{Note, VerifierKey};
use tlog_core::Checkpoint;

use crate::leaf::Leaf;
use crate::rules::Ledger;
use crate::SeId;

/// Largest alert accepted (a note, up to 65 leaves of ≤ 64 KiB with PATHs).
pub const MAX_ALERT: usize = 8 << 20;
/// Most leaves in one alert.
pub const MAX_ENTRIES: usize = 65;

/// One cited leaf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertEntry {
    /// Its log index.
    pub index: u64,
    /// The leaf's bytes (an `LKSC` entry).
    pub leaf: Vec<u8>,
    /// PATH(index, the checkpoint's size).
    pub proof: Vec<Hash>,
}

/// Evidence that the SE's log breaks the members' rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    /// The rule broken, as the member judged it.
    pub reason: String,
    /// The log's origin.
    pub origin: String,
    /// The SE's signed note covering every cited leaf.
    pub checkpoint: String,
    /// Earlier leaves of the coin in index order, then the refused one.
    pub entries: Vec<AlertEntry>,
}

/// What a verified alert shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proven {
    /// The checkpoint the leaves are in.
    pub checkpoint: Checkpoint,
    /// The refused leaf's index.
    pub index: u64,
    /// The rule it breaks, as the replay here judged it.
    pub rule: String,
}

/// Why an alert proves nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AlertError {
    /// Not the JSON of §6.1.
    #[error("malformed alert: {0}")]
    Malformed(String),
    /// The checkpoint is not signed by the SE's key.
    #[error("the checkpoint does not verify under the SE's key: {0}")]
    Checkpoint(String),
    /// A cited leaf is not in the checkpoint's tree.
    #[error("entry {0} is not in the signed tree")]
    NotIncluded(u64),
    /// Indices not strictly increasing, or none.
    #[error("entries are not in log order")]
    Order,
    /// The cited leaves do not break a rule where the alert says.
    #[error("the entries do not break the rules as claimed: {0}")]
    NotAViolation(String),
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireEntry {
    index: u64,
    leaf: String,
    proof: Vec<String>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireAlert {
    reason: String,
    origin: String,
    checkpoint: String,
    entries: Vec<WireEntry>,
}

impl Alert {
    /// The JSON of §6.1 (leaves and PATH hashes in hex).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "reason": self.reason,
            "origin": self.origin,
            "checkpoint": self.checkpoint,
            "entries": self.entries.iter().map(|e| serde_json::json!({
                "index": e.index,
                "leaf": hex::encode(&e.leaf),
                "proof": e.proof.iter().map(hex::encode).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        })
    }

    /// Parses an alert, refusing unknown fields and oversized input.
    pub fn from_json(bytes: &[u8]) -> Result<Alert, AlertError> {
        if bytes.len() > MAX_ALERT {
            return Err(AlertError::Malformed(format!("{} bytes", bytes.len())));
        }
        let w: WireAlert =
            serde_json::from_slice(bytes).map_err(|e| AlertError::Malformed(e.to_string()))?;
        if w.entries.is_empty() || w.entries.len() > MAX_ENTRIES {
            return Err(AlertError::Malformed(format!(
                "{} entries (1..={MAX_ENTRIES})",
                w.entries.len()
            )));
        }
        let entries = w
            .entries
            .into_iter()
            .map(|e| {
                let leaf = hex::decode(&e.leaf)
                    .map_err(|_| AlertError::Malformed(format!("entry {}: leaf", e.index)))?;
                if e.proof.len() > merkle::MAX_INCLUSION_PROOF {
                    return Err(AlertError::Malformed(format!("entry {}: proof", e.index)));
                }
                let proof = e
                    .proof
                    .iter()
                    .map(|h| {
                        hex::decode(h)
                            .ok()
                            .and_then(|b| <Hash>::try_from(b.as_slice()).ok())
                            .ok_or_else(|| {
                                AlertError::Malformed(format!("entry {}: proof hash", e.index))
                            })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(AlertEntry {
                    index: e.index,
                    leaf,
                    proof,
                })
            })
            .collect::<Result<Vec<_>, AlertError>>()?;
        Ok(Alert {
            reason: w.reason,
            origin: w.origin,
            checkpoint: w.checkpoint,
            entries,
        })
    }

    /// Checks the alert offline under the SE's log key (statechain.md §6.1).
    pub fn verify(&self, key: &VerifierKey) -> Result<Proven, AlertError> {
        let note = Note::parse(self.checkpoint.as_bytes())
            .and_then(|n| n.verify(std::slice::from_ref(key)))
            .map_err(|e| AlertError::Checkpoint(e.to_string()))?;
        let checkpoint =
            Checkpoint::parse(note.text()).map_err(|e| AlertError::Checkpoint(e.to_string()))?;
        if checkpoint.origin != self.origin || key.name() != self.origin {
            return Err(AlertError::Checkpoint(format!(
                "origin {:?}, the alert names {:?}",
                checkpoint.origin, self.origin
            )));
        }
        if self.entries.is_empty() || self.entries.windows(2).any(|w| w[0].index >= w[1].index) {
            return Err(AlertError::Order);
        }
        for e in &self.entries {
            merkle::verify_inclusion(
                e.index,
                checkpoint.size,
                &merkle::leaf_hash(&e.leaf),
                &e.proof,
                &checkpoint.root,
            )
            .map_err(|_| AlertError::NotIncluded(e.index))?;
        }
        let se_id: SeId = crate::hash::sha256(key.to_string().as_bytes());
        let mut ledger = Ledger::new();
        let (last, earlier) = self.entries.split_last().ok_or(AlertError::Order)?;
        for e in earlier {
            let leaf = Leaf::decode(&e.leaf).map_err(|err| {
                AlertError::NotAViolation(format!("entry {} does not decode: {err}", e.index))
            })?;
            ledger.apply(&leaf, &se_id).map_err(|err| {
                AlertError::NotAViolation(format!(
                    "entry {} already breaks the rules ({err}); it should be the one cited last",
                    e.index
                ))
            })?;
        }
        let rule = match Leaf::decode(&last.leaf) {
            Err(err) => format!("entry {} is not a statechain entry: {err}", last.index),
            Ok(leaf) => match ledger.apply(&leaf, &se_id) {
                Err(err) => format!("entry {}: {err}", last.index),
                Ok(()) => {
                    return Err(AlertError::NotAViolation(format!(
                        "entry {} follows the rules",
                        last.index
                    )))
                }
            },
        };
        Ok(Proven {
            checkpoint,
            index: last.index,
            rule,
        })
    }
}
