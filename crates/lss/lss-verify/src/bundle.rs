//! What a reply carries besides its signed checkpoint, bound to it by the
//! checkpoint's `bundle` line (its SHA-256): the log entries since the size
//! the client last saw, the compact range there, and for a read the proof
//! that the answer is complete. Because the server signs its digest, a
//! bundle that does not check out is the server's own signed statement.

use tlog_core::merkle::CompactRange;
use tlog_core::wire::{DecodeError, Reader, Writer};
use tlog_core::Hash;

use crate::entry::Entry;
use crate::state::{PrefixProof, MAX_KEY};

/// Most entries one bundle carries: a client further behind than this
/// cannot be shown consistency (and the server keeps no more).
pub const MAX_ENTRIES: usize = 1024;
const MAGIC: &[u8; 4] = b"LKB1";

/// The bundle of one reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundle {
    /// The log's compact range at the first entry's index.
    pub from: CompactRange,
    /// Entries `[from.size(), checkpoint size)`; at least the last one when
    /// the log is not empty.
    pub entries: Vec<Entry>,
    /// For a read: the answer's digest and completeness proof.
    pub answer: Option<Answer>,
}

/// A prefix read's claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The prefix read.
    pub prefix: String,
    /// [`crate::entry::answer_digest`] of the entries returned.
    pub digest: Hash,
    /// That they are all the keys of the prefix.
    pub proof: PrefixProof,
}

impl Bundle {
    /// The canonical encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.bytes(MAGIC);
        w.u64(self.from.size());
        w.proof(self.from.hashes());
        w.u32(self.entries.len() as u32);
        for e in &self.entries {
            e.write(&mut w);
        }
        match &self.answer {
            None => w.u8(0),
            Some(a) => {
                w.u8(1);
                w.blob32(a.prefix.as_bytes());
                w.hash(&a.digest);
                a.proof.write(&mut w);
            }
        }
        w.into_inner()
    }

    /// Parses a bundle; never panics.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        if r.bytes(4)? != MAGIC {
            return Err(DecodeError::TooLong);
        }
        let size = r.u64()?;
        let hashes = r.proof(64)?;
        let from = CompactRange::from_parts(size, hashes).map_err(|_| DecodeError::TooLong)?;
        let n = r.u32()? as usize;
        if n > MAX_ENTRIES || r.remaining() < n * crate::entry::ENTRY_LEN {
            return Err(DecodeError::TooLong);
        }
        let entries = (0..n)
            .map(|_| Entry::read(&mut r))
            .collect::<Result<_, _>>()?;
        let answer = match r.u8()? {
            0 => None,
            1 => {
                let prefix =
                    String::from_utf8(r.blob32(MAX_KEY)?).map_err(|_| DecodeError::Utf8)?;
                Some(Answer {
                    prefix,
                    digest: r.hash()?,
                    proof: PrefixProof::read(&mut r)?,
                })
            }
            _ => return Err(DecodeError::TooLong),
        };
        r.end()?;
        Ok(Bundle {
            from,
            entries,
            answer,
        })
    }
}
