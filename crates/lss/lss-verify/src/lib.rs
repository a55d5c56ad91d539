//! Verifiable LSS (issue 17; docs/protocol.md "Verifiable log"), with no I/O:
//! what lssd signs about a namespace, what a client checks, and what turns
//! a failed check into evidence anyone can verify.
//!
//! Each namespace has a log, one [`entry::Entry`] per committed put, kept
//! as an RFC 9162 Merkle tree (the tlog core's hashing and compact ranges).
//! Every entry records the namespace's state after the put as the root of
//! a sorted Merkle tree of its entries ([`state`]). A verifiable reply
//! carries a checkpoint of the log signed with the LSS server key
//! ([`statement`]) and a [`bundle::Bundle`] whose digest that checkpoint
//! signs: the entries since the size the client last saw, and for a read
//! the proof that nothing of the prefix was left out. [`verify::check`]
//! sorts failures into what only the client can know and [`Violation`]s,
//! which [`evidence::Evidence`] makes self-contained. [`ledger`] is the
//! server's side of the same rules.
//!
//! Why not `seen` by size alone: a signed hash of the client's checkpoint
//! makes "the server saw size n and then signed less" a statement in the
//! server's own words, with no trusted clock.

pub mod bundle;
pub mod entry;
pub mod evidence;
pub mod ledger;
pub mod quorum;
pub mod state;
pub mod statement;
pub mod verify;

pub use evidence::{Evidence, EvidenceError};
pub use state::{StateLeaf, StateTree};
pub use statement::{Seen, Statement};
pub use verify::{check, Expect, Rejected, Trusted, TrustedError, Violation};

/// Serde for a 32-byte hash as base64.
pub(crate) mod b64_hash {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(h: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&tlog_core::note::b64encode(h))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let text = String::deserialize(d)?;
        tlog_core::note::b64decode(&text)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| serde::de::Error::custom("not 32 bytes of base64"))
    }
}
