//! BIP340-style tagged hashes and the tags this protocol uses (§2.1).

use sha2::{Digest, Sha256};

/// Request authorisation digest (§3.2).
pub const TAG_AUTH: &str = "LK/statechain/auth/v1";
/// The owner's session commitment (§2.3).
pub const TAG_COMMIT: &str = "LK/statechain/commit/v1";
/// The SE's nonce hedging (§2.4).
pub const TAG_NONCE: &str = "LK/statechain/nonce/v1";
/// The sender's transfer statement (§4.5 step 5).
pub const TAG_TRANSFER: &str = "LK/statechain/transfer/v1";
/// BIP340's challenge.
pub const TAG_CHALLENGE: &str = "BIP0340/challenge";
/// BIP341's key tweak.
pub const TAG_TAPTWEAK: &str = "TapTweak";

/// `SHA256(SHA256(tag) ‖ SHA256(tag) ‖ parts…)`.
pub fn tagged_hash(tag: &str, parts: &[&[u8]]) -> [u8; 32] {
    let t = Sha256::digest(tag.as_bytes());
    let mut h = Sha256::new();
    h.update(t);
    h.update(t);
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// Plain SHA-256.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// The RFC 9162 leaf hash, from the log core (one definition).
pub use tlog_core::merkle::leaf_hash;
