//! Receipts: C2SP tlog-proof (`c2sp.org/tlog-proof@v1`, tlog.md §4.5), an
//! offline-verifiable statement that an entry is at an index of a log whose
//! checkpoint (with its cosignatures) is included:
//!
//! ```text
//! c2sp.org/tlog-proof@v1
//! extra <base64>            (optional, opaque application data)
//! index <decimal>
//! <base64 PATH hash>        (0..=63 lines)
//!
//! <signed checkpoint note>
//! ```
//!
//! Verification is the client's §8.4: the note must be acceptable under the
//! caller's policy (log key, witness quorum, freshness), then PATH must lead
//! from the entry's leaf hash at `index` to the checkpoint's root.

use crate::checkpoint::Checkpoint;
use crate::merkle::{leaf_hash, verify_inclusion, Hash, MAX_INCLUSION_PROOF};
use crate::note::{b64decode, b64encode, Note, MAX_NOTE};
use crate::policy::{Policy, Verified, VerifyError};

/// The first line.
pub const HEADER: &str = "c2sp.org/tlog-proof@v1";
/// Largest `extra` (decoded).
pub const MAX_EXTRA: usize = 16 * 1024;
/// Largest receipt.
pub const MAX_RECEIPT: usize = MAX_NOTE + 4 * MAX_EXTRA + 8 * 1024;

/// A parsed receipt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// Application data, opaque here.
    pub extra: Option<Vec<u8>>,
    /// The entry's index.
    pub index: u64,
    /// PATH(index, size) to the checkpoint's root.
    pub path: Vec<Hash>,
    /// The signed checkpoint (the log's signature and cosignatures).
    pub note: Vec<u8>,
}

/// Why a receipt does not parse or verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiptError {
    /// Not a tlog-proof, or not canonical.
    #[error("malformed receipt: {0}")]
    Malformed(&'static str),
    /// The checkpoint is not acceptable under the policy.
    #[error("the receipt's checkpoint is not acceptable: {0}")]
    Checkpoint(#[from] VerifyError),
    /// PATH does not lead from the entry to the checkpoint's root.
    #[error("the entry is not at index {index} of the checkpoint's tree (size {size})")]
    NotIncluded {
        /// The claimed index.
        index: u64,
        /// The checkpoint's size.
        size: u64,
    },
}

impl Receipt {
    /// The receipt's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = format!("{HEADER}\n");
        if let Some(extra) = &self.extra {
            out.push_str(&format!("extra {}\n", b64encode(extra)));
        }
        out.push_str(&format!("index {}\n", self.index));
        for h in &self.path {
            out.push_str(&b64encode(h));
            out.push('\n');
        }
        out.push('\n');
        let mut bytes = out.into_bytes();
        bytes.extend_from_slice(&self.note);
        bytes
    }

    /// Parses hostile bytes: sizes checked before decoding, canonical
    /// decimal and base64 only, never a panic.
    pub fn parse(bytes: &[u8]) -> Result<Receipt, ReceiptError> {
        let bad = ReceiptError::Malformed;
        if bytes.len() > MAX_RECEIPT {
            return Err(bad("over the size limit"));
        }
        let split = bytes
            .windows(2)
            .position(|w| w == b"\n\n")
            .ok_or(bad("no empty line before the checkpoint"))?;
        let head = std::str::from_utf8(&bytes[..split]).map_err(|_| bad("not UTF-8"))?;
        let note = bytes[split + 2..].to_vec();
        if note.is_empty() || note.len() > MAX_NOTE {
            return Err(bad("checkpoint missing or too large"));
        }
        let mut lines = head.split('\n');
        if lines.next() != Some(HEADER) {
            return Err(bad("first line is not c2sp.org/tlog-proof@v1"));
        }
        let mut line = lines.next().ok_or(bad("no index line"))?;
        let extra = match line.strip_prefix("extra ") {
            Some(b64) => {
                if b64.len() > 4 * MAX_EXTRA / 3 + 4 {
                    return Err(bad("extra too large"));
                }
                let data = b64decode(b64).ok_or(bad("extra is not canonical base64"))?;
                line = lines.next().ok_or(bad("no index line"))?;
                Some(data)
            }
            None => None,
        };
        let index = line.strip_prefix("index ").ok_or(bad("no index line"))?;
        if index.is_empty()
            || index.len() > 20
            || !index.bytes().all(|b| b.is_ascii_digit())
            || (index.len() > 1 && index.starts_with('0'))
        {
            return Err(bad("index is not a canonical decimal"));
        }
        let index: u64 = index.parse().map_err(|_| bad("index out of range"))?;
        let mut path = Vec::new();
        for line in lines {
            if path.len() == MAX_INCLUSION_PROOF {
                return Err(bad("more than 63 PATH hashes"));
            }
            let hash = b64decode(line)
                .and_then(|h| <Hash>::try_from(h.as_slice()).ok())
                .ok_or(bad("a PATH line is not a canonical base64 hash"))?;
            path.push(hash);
        }
        Ok(Receipt {
            extra,
            index,
            path,
            note,
        })
    }

    /// Checks that `entry` is at `index` of a checkpoint acceptable under
    /// `policy` at `now`; returns that checkpoint.
    pub fn verify(
        &self,
        entry: &[u8],
        policy: &Policy,
        now: u64,
    ) -> Result<Verified, ReceiptError> {
        let verified = policy.verify(&self.note, now)?;
        let Checkpoint { size, root, .. } = verified.checkpoint.clone();
        verify_inclusion(self.index, size, &leaf_hash(entry), &self.path, &root).map_err(|_| {
            ReceiptError::NotIncluded {
                index: self.index,
                size,
            }
        })?;
        Ok(verified)
    }

    /// The note, parsed (for display).
    pub fn checkpoint_note(&self) -> Option<Note> {
        Note::parse(&self.note).ok()
    }
}
