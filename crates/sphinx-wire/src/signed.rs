//! "Lightning Signed Message" signatures, as sphinx-key makes them for the
//! login token and control messages: a recoverable ECDSA signature by the
//! node key over `SHA-256(SHA-256("Lightning Signed Message:" ‖ bytes))`,
//! serialised as 65 bytes, `31 + recovery id` first.

use secp256k1::ecdsa::{RecoverableSignature, RecoveryId};
use secp256k1::{Message, PublicKey, Secp256k1, SecretKey};
use sha2::{Digest, Sha256};

const MAGIC: u8 = 31;
const PREFIX: &[u8] = b"Lightning Signed Message:";

/// Length of a signature.
pub const LEN: usize = 65;

fn digest(bytes: &[u8]) -> Message {
    let inner = Sha256::new()
        .chain_update(PREFIX)
        .chain_update(bytes)
        .finalize();
    Message::from_digest(Sha256::digest(inner).into())
}

/// Signs `bytes` with the node key.
pub fn sign(bytes: &[u8], secret: &SecretKey) -> [u8; LEN] {
    let signature = Secp256k1::signing_only().sign_ecdsa_recoverable(&digest(bytes), secret);
    let (id, compact) = signature.serialize_compact();
    let mut out = [0u8; LEN];
    out[0] = MAGIC + id.to_i32() as u8;
    out[1..].copy_from_slice(&compact);
    out
}

/// The key that signed `bytes`, or `None` if `signature` is not a valid
/// signature of anything.
pub fn recover(bytes: &[u8], signature: &[u8; LEN]) -> Option<PublicKey> {
    let id = signature[0]
        .checked_sub(MAGIC)
        .and_then(|id| RecoveryId::from_i32(i32::from(id)).ok())?;
    let signature = RecoverableSignature::from_compact(&signature[1..], id).ok()?;
    Secp256k1::verification_only()
        .recover_ecdsa(&digest(bytes), &signature)
        .ok()
}
