//! Client-side value protection, byte-compatible with the reference `PrivClient`
//! (lss-protocol.md §2).
//!
//! `stored = ChaCha20(key = secret, nonce = SHA-256(key ‖ version_be8)[..12])`
//! applied to `value ‖ HMAC-SHA256(secret, key ‖ version_be8 ‖ value)`.
//!
//! The server never looks inside values; only clients that hold `secret` call
//! this. Known weakness inherited for compatibility: the keystream depends only
//! on (key, version), so writing two different values at the same version (say
//! after a rejected put) reuses it. Clients should re-read after a conflict
//! rather than retry with new content at the same version.

use chacha20::cipher::{KeyIvInit, StreamCipher};
use chacha20::ChaCha20;
use hmac::{Hmac, Mac as _};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

const TAG_LEN: usize = 32;

/// Why a stored value did not decrypt and verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ValueError {
    /// Shorter than the 32-byte tag.
    #[error("protected value is {0} bytes, shorter than its 32-byte tag")]
    TooShort(usize),
    /// The tag does not match: wrong secret, or the value, key or version was altered.
    #[error("value HMAC does not verify")]
    BadTag,
}

/// The value secret `lss-cli` and the reference derive from a client key:
/// `SHA-256(secret key bytes)`.
pub fn secret_for_key(key: &secp256k1::SecretKey) -> [u8; 32] {
    Sha256::digest(key.secret_bytes()).into()
}

/// Encrypts and tags a value for storage under `key` at `version`.
pub fn protect(secret: &[u8; 32], key: &str, version: i64, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len() + TAG_LEN);
    out.extend_from_slice(value);
    out.extend_from_slice(&tag(secret, key, version, value));
    keystream(secret, key, version).apply_keystream(&mut out);
    out
}

/// Decrypts and verifies a value read from `key` at `version`.
pub fn unprotect(
    secret: &[u8; 32],
    key: &str,
    version: i64,
    stored: &[u8],
) -> Result<Vec<u8>, ValueError> {
    if stored.len() < TAG_LEN {
        return Err(ValueError::TooShort(stored.len()));
    }
    let mut plain = stored.to_vec();
    keystream(secret, key, version).apply_keystream(&mut plain);
    let received = plain.split_off(plain.len() - TAG_LEN);
    let expected = tag(secret, key, version, &plain);
    if !bool::from(expected.ct_eq(&received[..])) {
        return Err(ValueError::BadTag);
    }
    Ok(plain)
}

fn tag(secret: &[u8; 32], key: &str, version: i64, value: &[u8]) -> [u8; TAG_LEN] {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC accepts keys of any length");
    mac.update(key.as_bytes());
    mac.update(&version.to_be_bytes());
    mac.update(value);
    mac.finalize().into_bytes().into()
}

fn keystream(secret: &[u8; 32], key: &str, version: i64) -> ChaCha20 {
    let digest = Sha256::new()
        .chain_update(key.as_bytes())
        .chain_update(version.to_be_bytes())
        .finalize();
    ChaCha20::new(secret.into(), digest[..12].into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// lss-protocol.md §6.
    #[test]
    fn spec_vector() {
        let stored = protect(&[0x33; 32], "k/1", 3, b"hello");
        assert_eq!(
            hex::encode(&stored),
            "bd460cf8aae60e77c428571746cfa172a20130b931295d7820e11d13c111779bcaa767333b"
        );
        assert_eq!(
            unprotect(&[0x33; 32], "k/1", 3, &stored).as_deref(),
            Ok(&b"hello"[..])
        );
    }

    #[test]
    fn tampering_is_detected() {
        let secret = [0x33; 32];
        let stored = protect(&secret, "k/1", 3, b"hello");
        assert_eq!(
            unprotect(&secret, "k/1", 4, &stored),
            Err(ValueError::BadTag)
        );
        assert_eq!(
            unprotect(&secret, "k/2", 3, &stored),
            Err(ValueError::BadTag)
        );
        assert_eq!(
            unprotect(&[0x34; 32], "k/1", 3, &stored),
            Err(ValueError::BadTag)
        );
        let mut flipped = stored.clone();
        flipped[0] ^= 1;
        assert_eq!(
            unprotect(&secret, "k/1", 3, &flipped),
            Err(ValueError::BadTag)
        );
        assert_eq!(
            unprotect(&secret, "k/1", 3, &stored[..31]),
            Err(ValueError::TooShort(31))
        );
        assert_eq!(
            unprotect(&secret, "k/1", 3, &[]),
            Err(ValueError::TooShort(0))
        );
    }

    proptest::proptest! {
        #[test]
        fn round_trip(secret: [u8; 32], key in ".{0,20}", version: i64, value in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let stored = protect(&secret, &key, version, &value);
            proptest::prop_assert_eq!(stored.len(), value.len() + 32);
            proptest::prop_assert_eq!(unprotect(&secret, &key, version, &stored), Ok(value));
        }
    }
}
