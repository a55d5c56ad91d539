//! Equivocation evidence, LKEV (tlog.md §7.8): two notes of one origin,
//! validly signed by the same key, whose trees differ. Self-contained:
//! anyone holding that key checks it offline.
//!
//! ```text
//! "LKEV" ‖ u8 version (1) ‖ u8 subject (0 log key, 1 witness key) ‖
//! str8 witness name (empty for 0) ‖ blob32 note_a ‖ blob32 note_b ‖
//! hash root_b_at_a ‖ proof (u8 n ≤ 64 ‖ n hashes: size_a → size_b)
//! ```
//! Canonical: each note is its text plus the subject's one signature line;
//! note_a has the smaller size (equal sizes: the bytewise smaller root).

use crate::checkpoint::Checkpoint;
use crate::merkle::{verify_consistency, Hash, MAX_CONSISTENCY_PROOF};
use crate::note::{KeyType, Note, VerifierKey};
use crate::wire::{Reader, Writer};

/// Largest evidence blob.
pub const MAX_EVIDENCE: usize = 262_144;
const MAGIC: &[u8; 4] = b"LKEV";

/// Whose signatures contradict each other.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// The log's key.
    Log,
    /// A witness key, by name.
    Witness(String),
}

/// Why bytes are not valid evidence.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvidenceError {
    /// Not the LKEV encoding.
    #[error("malformed evidence: {0}")]
    Malformed(&'static str),
    /// A note is not signed by the trusted key, or not a checkpoint.
    #[error("a note of the evidence does not verify: {0}")]
    Note(String),
    /// Not in canonical form.
    #[error("evidence not in canonical form")]
    NotCanonical,
    /// The two trees do not differ, or the proof does not connect them.
    #[error("the notes do not contradict each other: {0}")]
    NoContradiction(&'static str),
}

/// Valid evidence, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evidence {
    /// Whose key signed both.
    pub subject: Subject,
    /// The smaller tree's note.
    pub note_a: Note,
    /// The other.
    pub note_b: Note,
    /// The root of tree b at size a.
    pub root_b_at_a: Hash,
    /// Consistency proof from (size a, root_b_at_a) to tree b.
    pub proof: Vec<Hash>,
}

impl Evidence {
    /// Builds canonical evidence from two notes signed by `key` (the log's,
    /// or a witness's), given the root of the larger tree at the smaller
    /// size and the proof between them (for equal sizes: `root_b_at_a` is
    /// the other root and the proof empty). The caller has verified both.
    pub fn build(
        key: &VerifierKey,
        one: &Note,
        other: &Note,
        root_b_at_a: Hash,
        proof: Vec<Hash>,
    ) -> Result<Vec<u8>, EvidenceError> {
        let strip = |note: &Note| -> Result<(Note, Checkpoint), EvidenceError> {
            let line = note
                .signatures()
                .iter()
                .find(|l| l.name == key.name() && l.id == key.id())
                .ok_or(EvidenceError::Note("not signed by the subject".into()))?;
            let mut only =
                Note::new(note.text()).map_err(|e| EvidenceError::Note(e.to_string()))?;
            only.add(line.clone());
            let cp =
                Checkpoint::parse(note.text()).map_err(|e| EvidenceError::Note(e.to_string()))?;
            Ok((only, cp))
        };
        let (mut a, mut cpa) = strip(one)?;
        let (mut b, mut cpb) = strip(other)?;
        let swap = (cpa.size, cpa.root) > (cpb.size, cpb.root);
        if swap {
            std::mem::swap(&mut a, &mut b);
            std::mem::swap(&mut cpa, &mut cpb);
        }
        // Equal sizes: the larger tree at the smaller size is the tree,
        // whichever note the caller gave first.
        let root_b_at_a = if cpa.size == cpb.size {
            cpb.root
        } else {
            root_b_at_a
        };
        let subject = match key.key_type() {
            KeyType::Ed25519 => Subject::Log,
            KeyType::Cosignature => Subject::Witness(key.name().to_string()),
        };
        let evidence = Evidence {
            subject,
            note_a: a,
            note_b: b,
            root_b_at_a,
            proof,
        };
        let bytes = evidence.encode();
        Evidence::verify(&bytes, std::slice::from_ref(key))?;
        Ok(bytes)
    }

    /// The origin that evidence bytes name (note a's first line), without
    /// verifying anything: to route it to the log whose key then checks
    /// it with [`Evidence::verify`].
    pub fn origin(bytes: &[u8]) -> Option<String> {
        if bytes.len() > MAX_EVIDENCE {
            return None;
        }
        let mut r = Reader::new(bytes);
        if r.bytes(4).ok()? != MAGIC || r.u8().ok()? != 1 {
            return None;
        }
        r.u8().ok()?;
        r.str8().ok()?;
        let note_a = r.blob32(crate::note::MAX_NOTE).ok()?;
        let text = std::str::from_utf8(&note_a).ok()?;
        text.split('\n').next().map(str::to_string)
    }

    /// The canonical bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.bytes(MAGIC);
        w.u8(1);
        match &self.subject {
            Subject::Log => {
                w.u8(0);
                w.str8("");
            }
            Subject::Witness(name) => {
                w.u8(1);
                w.str8(name);
            }
        }
        w.blob32(&self.note_a.to_bytes());
        w.blob32(&self.note_b.to_bytes());
        w.hash(&self.root_b_at_a);
        w.proof(&self.proof);
        w.into_inner()
    }

    /// Decodes and checks evidence against the keys trusted for the
    /// subject's role: valid iff canonical, both notes parse with one origin
    /// and carry a valid signature (cosignature) of the same trusted key,
    /// size_a ≥ 1, root_b_at_a differs from root_a, and the proof connects
    /// (size_a, root_b_at_a) to (size_b, root_b).
    pub fn verify(bytes: &[u8], trusted: &[VerifierKey]) -> Result<Evidence, EvidenceError> {
        if bytes.len() > MAX_EVIDENCE {
            return Err(EvidenceError::Malformed("over 256 KiB"));
        }
        let mut r = Reader::new(bytes);
        let malformed = |_| EvidenceError::Malformed("truncated or overlong field");
        if r.bytes(4).map_err(malformed)? != MAGIC {
            return Err(EvidenceError::Malformed("not LKEV"));
        }
        if r.u8().map_err(malformed)? != 1 {
            return Err(EvidenceError::Malformed("unknown version"));
        }
        let subject = r.u8().map_err(malformed)?;
        let name = r.str8().map_err(malformed)?;
        let subject = match (subject, name.is_empty()) {
            (0, true) => Subject::Log,
            (1, false) => Subject::Witness(name),
            _ => {
                return Err(EvidenceError::Malformed(
                    "subject and witness name disagree",
                ))
            }
        };
        let note_a = r.blob32(crate::note::MAX_NOTE).map_err(malformed)?;
        let note_b = r.blob32(crate::note::MAX_NOTE).map_err(malformed)?;
        let root_b_at_a = r.hash().map_err(malformed)?;
        let proof = r.proof(MAX_CONSISTENCY_PROOF).map_err(malformed)?;
        r.end()
            .map_err(|_| EvidenceError::Malformed("trailing bytes"))?;

        let role = match &subject {
            Subject::Log => KeyType::Ed25519,
            Subject::Witness(_) => KeyType::Cosignature,
        };
        let open = |bytes: &[u8]| -> Result<(Note, Checkpoint, VerifierKey), EvidenceError> {
            let note = Note::parse(bytes).map_err(|e| EvidenceError::Note(e.to_string()))?;
            let [line] = note.signatures() else {
                return Err(EvidenceError::NotCanonical);
            };
            let key = trusted
                .iter()
                .find(|k| k.key_type() == role && k.name() == line.name && k.id() == line.id)
                .ok_or(EvidenceError::Note(
                    "signed by no trusted key of that role".into(),
                ))?;
            if let Subject::Witness(name) = &subject {
                if name != key.name() {
                    return Err(EvidenceError::Note("not the named witness".into()));
                }
            }
            let checkpoint =
                Checkpoint::parse(note.text()).map_err(|e| EvidenceError::Note(e.to_string()))?;
            verify_line(&note, key)?;
            Ok((note, checkpoint, key.clone()))
        };
        let (na, cpa, ka) = open(&note_a)?;
        let (nb, cpb, kb) = open(&note_b)?;
        if ka != kb {
            return Err(EvidenceError::Note(
                "the notes are signed by different keys".into(),
            ));
        }
        if cpa.origin != cpb.origin {
            return Err(EvidenceError::NoContradiction("different origins"));
        }
        if (cpa.size, cpa.root) > (cpb.size, cpb.root)
            || na.to_bytes() != note_a
            || nb.to_bytes() != note_b
        {
            return Err(EvidenceError::NotCanonical);
        }
        if cpa.size == 0 {
            return Err(EvidenceError::NoContradiction("size_a is 0"));
        }
        if root_b_at_a == cpa.root {
            return Err(EvidenceError::NoContradiction(
                "tree b has root_a at size_a",
            ));
        }
        if cpa.size == cpb.size && (root_b_at_a != cpb.root || !proof.is_empty()) {
            return Err(EvidenceError::NoContradiction(
                "equal sizes need root_b and no proof",
            ));
        }
        verify_consistency(cpa.size, cpb.size, &root_b_at_a, &cpb.root, &proof)
            .map_err(|_| EvidenceError::NoContradiction("the proof does not connect the trees"))?;
        Ok(Evidence {
            subject,
            note_a: na,
            note_b: nb,
            root_b_at_a,
            proof,
        })
    }

    /// `H(evidence bytes)`.
    pub fn digest(bytes: &[u8]) -> Hash {
        use sha2::Digest;
        sha2::Sha256::digest(bytes).into()
    }
}

/// Checks the note's one signature line with `key`, whatever its role.
fn verify_line(note: &Note, key: &VerifierKey) -> Result<(), EvidenceError> {
    let verified = note
        .signatures()
        .iter()
        .any(|line| key.verify_line(note.text(), line));
    if verified {
        Ok(())
    } else {
        Err(EvidenceError::Note(format!(
            "the signature of {} does not verify",
            key.name()
        )))
    }
}
