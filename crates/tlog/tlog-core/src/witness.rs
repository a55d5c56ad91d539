//! The witness's decisions (tlog-witness `add-checkpoint`, tlog.md §5.1),
//! with no I/O: parse the request, and decide, in the spec's order, which
//! status it gets. The caller does the compare-and-set on its record and
//! cosigns only after it is durable.
//!
//! Body: `old <M>` LF, 0..=63 base64 hash lines, an empty line, then the
//! checkpoint note.

use crate::checkpoint::{Checkpoint, MAX_ORIGIN};
use crate::merkle::{verify_consistency, Hash, EMPTY_ROOT, MAX_INCLUSION_PROOF};
use crate::note::{b64decode, KeyType, Note, NoteError, VerifierKey};

/// Largest request body.
pub const MAX_BODY: usize = 72 * 1024;

/// A parsed add-checkpoint request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddCheckpoint {
    /// The size the submitter believes this witness last cosigned.
    pub old: u64,
    /// Consistency proof from `old`.
    pub proof: Vec<Hash>,
    /// The signed checkpoint.
    pub note: Vec<u8>,
}

/// A refusal, with its HTTP status and body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status}: {body}")]
pub struct Refusal {
    /// 400, 403, 404, 409 or 422.
    pub status: u16,
    /// For 409 the latest cosigned size and LF (`text/x.tlog.size`);
    /// otherwise a reason.
    pub body: String,
}

fn refuse(status: u16, body: impl Into<String>) -> Refusal {
    Refusal {
        status,
        body: body.into(),
    }
}

/// What the witness is to cosign once its record is updated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// The checkpoint.
    pub checkpoint: Checkpoint,
    /// The note as verified (only configured keys' lines).
    pub note: Note,
}

impl AddCheckpoint {
    /// Parses a request body (400 on anything malformed).
    pub fn parse(body: &[u8]) -> Result<AddCheckpoint, Refusal> {
        if body.len() > MAX_BODY {
            return Err(refuse(400, "body over 72 KiB"));
        }
        let text = std::str::from_utf8(body).map_err(|_| refuse(400, "body is not UTF-8"))?;
        let (first, rest) = text
            .split_once('\n')
            .ok_or_else(|| refuse(400, "no old line"))?;
        let old = first
            .strip_prefix("old ")
            .and_then(crate::checkpoint::parse_decimal)
            .ok_or_else(|| refuse(400, "first line is not `old <size>`"))?;
        // Proof lines are base64 (never empty); the first empty line ends
        // them. The note has an empty line of its own further on.
        let (proof_lines, note) = match rest.strip_prefix('\n') {
            Some(note) => ("", note),
            None => rest
                .split_once("\n\n")
                .ok_or_else(|| refuse(400, "no empty line before the checkpoint"))?,
        };
        let mut proof = Vec::new();
        if !proof_lines.is_empty() {
            for line in proof_lines.split('\n') {
                if proof.len() == MAX_INCLUSION_PROOF {
                    return Err(refuse(400, "more than 63 proof lines"));
                }
                let hash: Hash = b64decode(line)
                    .and_then(|b| b.try_into().ok())
                    .ok_or_else(|| refuse(400, "a proof line is not a base64 hash"))?;
                proof.push(hash);
            }
        }
        Ok(AddCheckpoint {
            old,
            proof,
            note: note.as_bytes().to_vec(),
        })
    }

    /// Decides steps 2–6 of §5.1. `keys` are the log keys configured for
    /// the note's origin (`None`: origin not configured); `latest` is this
    /// witness's latest cosigned (size, root) for it, if any.
    pub fn decide(
        &self,
        keys: impl Fn(&str) -> Option<Vec<VerifierKey>>,
        latest: Option<(u64, Hash)>,
    ) -> Result<Accepted, Refusal> {
        let parsed = Note::parse(&self.note).map_err(|e| refuse(400, e.to_string()))?;
        // The origin, to find the keys, before anything is verified.
        let origin = parsed.text().split('\n').next().unwrap_or_default();
        if origin.is_empty() || origin.len() > MAX_ORIGIN {
            return Err(refuse(400, "no origin"));
        }
        let keys = keys(origin).ok_or_else(|| refuse(404, "unknown origin"))?;
        let logs: Vec<VerifierKey> = keys
            .into_iter()
            .filter(|k| k.key_type() == KeyType::Ed25519)
            .collect();
        let note = parsed.verify(&logs).map_err(|e| match e {
            NoteError::Malformed(_) | NoteError::KeyName => refuse(400, e.to_string()),
            _ => refuse(403, e.to_string()),
        })?;
        let checkpoint = Checkpoint::parse(note.text()).map_err(|e| refuse(400, e.to_string()))?;
        let (m, n) = (self.old, checkpoint.size);
        if m > n {
            return Err(refuse(400, "old size is larger than the checkpoint's"));
        }
        let (stored_size, stored_root) = latest.unwrap_or((0, EMPTY_ROOT));
        if m != stored_size {
            return Err(refuse(409, format!("{stored_size}\n")));
        }
        let inconsistent = |why: &str| refuse(422, why.to_string());
        if n == 0 && checkpoint.root != EMPTY_ROOT {
            return Err(inconsistent("an empty tree with another root"));
        }
        if m == 0 && !self.proof.is_empty() {
            return Err(inconsistent("a proof from size 0"));
        }
        if m == n && checkpoint.root != stored_root && latest.is_some() {
            return Err(inconsistent("same size, another root"));
        }
        if m > 0 {
            verify_consistency(m, n, &stored_root, &checkpoint.root, &self.proof).map_err(|e| {
                inconsistent(&format!("not consistent with the cosigned tree: {e}"))
            })?;
        }
        Ok(Accepted { checkpoint, note })
    }
}
