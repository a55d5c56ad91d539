//! Self-contained evidence that an LSS server contradicted itself: its
//! signed checkpoint notes, the signed bundle, the earlier checkpoint's
//! compact range and, for a false answer, the answer's leaves (keys,
//! versions and value hashes: no values, no secrets). Anyone holding the
//! server id can re-run the checks with [`Evidence::verify`].
//!
//! The file is JSON (`"format": "lightkeeper-lss-evidence-v1"`), binary
//! fields in base64, at most [`MAX_EVIDENCE`] bytes.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::state::StateLeaf;
use crate::statement::Statement;
use crate::verify::{provable, Rejected, Trusted, Violation};

/// Largest evidence file accepted.
pub const MAX_EVIDENCE: usize = 4 * 1024 * 1024;
const FORMAT: &str = "lightkeeper-lss-evidence-v1";

/// An evidence file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Evidence {
    /// Always `lightkeeper-lss-evidence-v1`.
    pub format: String,
    /// The server id (66 hex).
    pub server_id: String,
    /// The violation, in words (informative; verification recomputes it).
    pub claim: String,
    /// The checkpoint the later one contradicts, if any.
    pub earlier: Option<EarlierCheckpoint>,
    /// The contradicting reply: its signed note and bundle (base64).
    pub later_note: String,
    /// Its bundle.
    pub later_bundle: String,
    /// For a false answer: the leaves the server returned.
    pub answer: Option<Vec<StateLeaf>>,
}

/// An earlier checkpoint with its compact range.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EarlierCheckpoint {
    /// The signed note (base64).
    pub note: String,
    /// The trusted-state encoding (base64) of note and range.
    pub trusted: String,
}

/// Why evidence does not prove anything.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvidenceError {
    /// Not the format, or too large.
    #[error("malformed evidence: {0}")]
    Malformed(String),
    /// A checkpoint in it is not signed by the server.
    #[error("a checkpoint in the evidence is not validly signed: {0}")]
    Signature(String),
    /// Everything checks out: no contradiction.
    #[error("no violation: the signed statements are consistent ({0})")]
    Consistent(String),
}

fn b64(bytes: &[u8]) -> String {
    tlog_core::note::b64encode(bytes)
}

fn unb64(text: &str) -> Result<Vec<u8>, EvidenceError> {
    tlog_core::note::b64decode(text).ok_or_else(|| EvidenceError::Malformed("bad base64".into()))
}

impl Evidence {
    /// Evidence of `violation`, found in a reply (`note`, `bundle`) checked
    /// against `earlier` with `answer`.
    pub fn new(
        server_id: &[u8; 33],
        violation: &Violation,
        earlier: Option<&Trusted>,
        note: &[u8],
        bundle: &[u8],
        answer: Option<&[StateLeaf]>,
    ) -> Self {
        Evidence {
            format: FORMAT.to_owned(),
            server_id: hex::encode(server_id),
            claim: violation.to_string(),
            earlier: earlier.map(|t| EarlierCheckpoint {
                note: b64(t.note()),
                trusted: b64(&t.encode()),
            }),
            later_note: b64(note),
            later_bundle: b64(bundle),
            answer: answer.map(<[StateLeaf]>::to_vec),
        }
    }

    /// The JSON file.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Parses and verifies a file; returns the violation it proves.
    pub fn verify(bytes: &[u8]) -> Result<(Evidence, Violation), EvidenceError> {
        if bytes.len() > MAX_EVIDENCE {
            return Err(EvidenceError::Malformed("larger than 4 MiB".into()));
        }
        let evidence: Evidence =
            serde_json::from_slice(bytes).map_err(|e| EvidenceError::Malformed(e.to_string()))?;
        if evidence.format != FORMAT {
            return Err(EvidenceError::Malformed("unknown format".into()));
        }
        let server_id: [u8; 33] = hex::decode(&evidence.server_id)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| EvidenceError::Malformed("server id is not 33 bytes of hex".into()))?;
        let note = unb64(&evidence.later_note)?;
        let bundle = unb64(&evidence.later_bundle)?;
        let statement = Statement::verify(&note, &server_id)
            .map_err(|e| EvidenceError::Signature(e.to_string()))?;
        if <[u8; 32]>::from(Sha256::digest(&bundle)) != statement.bundle {
            return Err(EvidenceError::Malformed(
                "the bundle is not the one signed".into(),
            ));
        }
        let earlier = match &evidence.earlier {
            None => None,
            Some(e) => {
                let trusted = Trusted::decode(&unb64(&e.trusted)?, &server_id)
                    .map_err(|e| EvidenceError::Signature(e.to_string()))?;
                if trusted.note() != unb64(&e.note)? {
                    return Err(EvidenceError::Malformed(
                        "the earlier note differs from its trusted state".into(),
                    ));
                }
                if trusted.statement().client != statement.client {
                    return Err(EvidenceError::Malformed(
                        "the checkpoints are of different namespaces".into(),
                    ));
                }
                Some(trusted)
            }
        };
        let answer = match (&evidence.answer, &statement.nonce) {
            (Some(leaves), _) => {
                let prefix = crate::bundle::Bundle::decode(&bundle)
                    .ok()
                    .and_then(|b| b.answer)
                    .map(|a| a.prefix)
                    .ok_or_else(|| {
                        EvidenceError::Malformed("answer leaves without a signed answer".into())
                    })?;
                Some((prefix, leaves.as_slice()))
            }
            (None, _) => None,
        };
        let answer_ref = answer.as_ref().map(|(p, l)| (p.as_str(), *l));
        match provable(&statement, &bundle, earlier.as_ref(), answer_ref) {
            Err(Rejected::Violation(v)) => Ok((evidence, v)),
            Err(Rejected::Unverifiable(why)) => Err(EvidenceError::Consistent(why)),
            Ok(_) => Err(EvidenceError::Consistent("every check passes".into())),
        }
    }
}
