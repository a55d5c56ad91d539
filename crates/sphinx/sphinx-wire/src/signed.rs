//! Node-key signatures over bytes, in two domains.
//!
//! **Lightning Signed Message** ([`Domain::LightningMessage`]): a recoverable
//! ECDSA signature over `SHA-256(SHA-256("Lightning Signed Message:" ‖ bytes))`.
//! sphinx-key signs its login token and control messages this way, and so
//! does hsmd's `SignMessage`, which any process on the node host may ask for:
//! the node host can obtain such a signature over *any* bytes, including a
//! control message or a login timestamp. That form is therefore accepted for
//! our own purposes only where an operator opted into sphinx-key
//! compatibility, and the signer refuses to `SignMessage` anything shaped
//! like one ([`is_reserved_message`]).
//!
//! **Tagged** ([`Domain::Tagged`]): the same signature over the BIP-340 style
//! tagged hash `SHA-256(SHA-256(tag) ‖ SHA-256(tag) ‖ bytes)` with a tag of
//! our own (`lightkeeper/…`). No hsmd request produces a signature over such
//! a digest: a `SignMessage` digest is a SHA-256 of a 32-byte input, a tagged
//! one of at least 64 bytes, so one equal to the other is a SHA-256 collision.
//!
//! Both serialise as 65 bytes, `31 + recovery id` first, as sphinx-key does.

use secp256k1::ecdsa::{RecoverableSignature, RecoveryId};
use secp256k1::{Message, PublicKey, Secp256k1, SecretKey};
use sha2::{Digest, Sha256};

const MAGIC: u8 = 31;
const PREFIX: &[u8] = b"Lightning Signed Message:";

/// Length of a signature.
pub const LEN: usize = 65;

/// Which digest a signature is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Domain {
    /// `SHA-256d("Lightning Signed Message:" ‖ bytes)`: sphinx-key's form, and
    /// what hsmd's `SignMessage` signs.
    LightningMessage,
    /// A tagged hash under this tag: Lightkeeper's own purposes.
    Tagged(&'static str),
}

/// The tag of the signer's MQTT login token.
pub const LOGIN_TAG: &str = "lightkeeper/signer-login/v1";
/// The tag of control messages.
pub const CONTROL_TAG: &str = "lightkeeper/control/v1";

fn digest(domain: Domain, bytes: &[u8]) -> Message {
    let hash = match domain {
        Domain::LightningMessage => {
            let inner = Sha256::new()
                .chain_update(PREFIX)
                .chain_update(bytes)
                .finalize();
            Sha256::digest(inner)
        }
        Domain::Tagged(tag) => {
            let tag = Sha256::digest(tag.as_bytes());
            Sha256::new()
                .chain_update(tag)
                .chain_update(tag)
                .chain_update(bytes)
                .finalize()
        }
    };
    Message::from_digest(hash.into())
}

/// Signs `bytes` in `domain` with the node key.
pub fn sign(domain: Domain, bytes: &[u8], secret: &SecretKey) -> [u8; LEN] {
    let signature =
        Secp256k1::signing_only().sign_ecdsa_recoverable(&digest(domain, bytes), secret);
    let (id, compact) = signature.serialize_compact();
    let mut out = [0u8; LEN];
    out[0] = MAGIC + id.to_i32() as u8;
    out[1..].copy_from_slice(&compact);
    out
}

/// The key that signed `bytes` in `domain`, or `None` if `signature` is not
/// a valid signature of anything.
pub fn recover(domain: Domain, bytes: &[u8], signature: &[u8; LEN]) -> Option<PublicKey> {
    let id = signature[0]
        .checked_sub(MAGIC)
        .and_then(|id| RecoveryId::from_i32(i32::from(id)).ok())?;
    let signature = RecoverableSignature::from_compact(&signature[1..], id).ok()?;
    Secp256k1::verification_only()
        .recover_ecdsa(&digest(domain, bytes), &signature)
        .ok()
}

/// Whether hsmd's `SignMessage` must refuse `message`: a signature over it
/// would be a sphinx-key login token or control message.
///
/// The rule, exactly: `message` is reserved if it is 4 bytes long (a login
/// timestamp), or if it is at least 9 bytes long and everything but its last
/// 8 bytes (the nonce) decodes, completely, as a
/// [`ControlMessage`](crate::control::ControlMessage). Ordinary text messages
/// (what `lightning-cli signmessage` is for) are neither.
pub fn is_reserved_message(message: &[u8]) -> bool {
    if message.len() == 4 {
        return true;
    }
    message.len() >= 9 && crate::control::decodes_as_message(&message[..message.len() - 8])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_two_domains_never_verify_for_each_other() {
        let secret = SecretKey::from_slice(&[3; 32]).expect("key");
        let public = secret.public_key(&Secp256k1::signing_only());
        let bytes = b"some bytes";
        let lsm = sign(Domain::LightningMessage, bytes, &secret);
        let tagged = sign(Domain::Tagged(CONTROL_TAG), bytes, &secret);
        assert_eq!(recover(Domain::LightningMessage, bytes, &lsm), Some(public));
        assert_eq!(
            recover(Domain::Tagged(CONTROL_TAG), bytes, &tagged),
            Some(public)
        );
        assert_ne!(
            recover(Domain::Tagged(CONTROL_TAG), bytes, &lsm),
            Some(public)
        );
        assert_ne!(
            recover(Domain::LightningMessage, bytes, &tagged),
            Some(public)
        );
        assert_ne!(
            recover(Domain::Tagged(LOGIN_TAG), bytes, &tagged),
            Some(public)
        );
    }

    #[test]
    fn reserved_shapes() {
        use crate::control::{encode, ControlMessage};
        assert!(is_reserved_message(&[0, 1, 2, 3]), "a login timestamp");
        let mut body = encode(&ControlMessage::UpdateAllowlist(vec!["x".into()]));
        body.extend_from_slice(&7u64.to_be_bytes());
        assert!(is_reserved_message(&body), "a control message");
        let mut nonce_query = encode(&ControlMessage::Nonce);
        nonce_query.extend_from_slice(&[0; 8]);
        assert!(is_reserved_message(&nonce_query));
        for ordinary in [
            &b"hello world"[..],
            b"",
            b"abc",
            b"abcde",
            b"I agree to the terms of service",
        ] {
            assert!(!is_reserved_message(ordinary), "{ordinary:?}");
        }
    }
}
