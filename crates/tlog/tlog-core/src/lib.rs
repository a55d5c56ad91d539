//! The transparency-log core (`../shared/docs/tlog.md`), with no I/O, no
//! clock and no randomness: every time is a `now` argument, every key is
//! handed in, and no input panics.
//!
//! - [`merkle`]: RFC 9162 hashing, compact ranges, inclusion and
//!   consistency proofs (verification and generation over stored nodes);
//! - [`note`]: C2SP signed notes, keys, verifier keys;
//! - [`checkpoint`]: checkpoint bodies and origins;
//! - [`cosignature`]: tlog-cosignature v1 messages;
//! - [`tile`]: tlog-tiles paths and which tiles exist at a size;
//! - [`policy`]: tlog-policy files, k-of-n witness quorums, freshness;
//! - [`view`]: a client's verified, persisted view of one log (§8.2);
//! - [`entry_sync`]: incremental, chunked, verified entry download (§8.3);
//! - [`receipt`]: C2SP tlog-proof receipts (§4.5, §8.4);
//! - [`evidence`]: LKEV equivocation evidence (§7.8);
//! - [`witness`]: the witness's add-checkpoint decisions (§5.1);
//! - [`follow`]: a follower's LKTL/1 decisions (§7.6–§7.7);
//! - [`sync`]: LKTL/1 identification lines, frames and messages (§7.2–§7.5);
//! - [`wire`]: the binary field encodings (§7.4).
//!
//! Why written here rather than taken from `signed_note`/`tlog_tiles`: the
//! spec pins stricter rules than they apply (a failing configured signature
//! rejects the note, repeated keys are refused, `verify_strict` everywhere,
//! canonical paths only) and the core must never panic on input; both crates
//! are used as independent oracles in the tests instead.

pub mod checkpoint;
pub mod cosignature;
pub mod entry_sync;
pub mod evidence;
pub mod follow;
pub mod merkle;
pub mod note;
pub mod policy;
pub mod receipt;
pub mod sync;
pub mod tile;
pub mod view;
pub mod wire;
pub mod witness;

pub use checkpoint::{log_id, Checkpoint, CheckpointError};
pub use evidence::{Evidence, EvidenceError};
pub use merkle::{
    consistency_proof, inclusion_proof, leaf_hash, node_hash, verify_consistency, verify_inclusion,
    CompactRange, Hash, MemoryTree, NodeSource, ProofError, EMPTY_ROOT,
};
pub use note::{KeyType, Note, NoteError, SignatureLine, SignerKey, VerifierKey};
pub use policy::{Policy, PolicyError, Verified, VerifyError};
pub use receipt::{Receipt, ReceiptError};
pub use tile::TileId;
pub use view::{LogView, Offer, ViewError};
