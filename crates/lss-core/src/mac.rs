//! The single MAC primitive of the protocol, `shared_hmac` (lss-protocol.md §2).
//!
//! `HMAC-SHA256(key = shared, msg = shared ‖ nonce ‖ Σ key ‖ version_be8 ‖ value)`,
//! with no framing between fields. The lack of framing is the reference's design
//! and is kept bit for bit: changing it would break every existing client.

use hmac::{Hmac, Mac as _};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::{identity::SharedSecret, KeyValue};

/// Nonce of the client's MAC over a put request's kvs.
pub const PUT_CLIENT_NONCE: &[u8] = &[0x01];
/// Nonce of the server's MAC over a successful put's kvs.
pub const PUT_SERVER_NONCE: &[u8] = &[0x02];

/// A 32-byte HMAC-SHA256 tag.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Mac(pub [u8; 32]);

impl Mac {
    /// Whether `received` is this MAC, compared in constant time so that a
    /// forger learns nothing from how long a rejection takes. A wrong length is
    /// simply unequal.
    pub fn verify(&self, received: &[u8]) -> bool {
        received.len() == 32 && bool::from(self.0.ct_eq(received))
    }

    /// The tag bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl std::fmt::Debug for Mac {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Mac({})", hex::encode(self.0))
    }
}

/// `shared_hmac(shared, nonce, kvs)` over the kvs in the order given.
pub fn shared_hmac<'a>(
    shared: &SharedSecret,
    nonce: &[u8],
    kvs: impl IntoIterator<Item = &'a KeyValue>,
) -> Mac {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(shared.expose()).expect("HMAC accepts keys of any length"); // invariant of RFC 2104
    mac.update(shared.expose());
    mac.update(nonce);
    for kv in kvs {
        mac.update(kv.key.as_bytes());
        mac.update(&kv.version.to_be_bytes());
        mac.update(&kv.value);
    }
    Mac(mac.finalize().into_bytes().into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ClientId, ServerKey};
    use secp256k1::{Secp256k1, SecretKey};

    fn shared() -> SharedSecret {
        let client = SecretKey::from_slice(&[0x11; 32]).expect("valid");
        let server = ServerKey::new(SecretKey::from_slice(&[0x22; 32]).expect("valid"));
        server.shared_secret(&ClientId::from(client.public_key(&Secp256k1::new())))
    }

    /// lss-protocol.md §6.
    #[test]
    fn spec_vectors() {
        let shared = shared();
        let kvs = [KeyValue::new("a", 0, *b"x"), KeyValue::new("b", 1, *b"")];
        let hex = |mac: Mac| hex::encode(mac.0);
        assert_eq!(
            hex(shared_hmac(&shared, PUT_CLIENT_NONCE, &kvs)),
            "de6ed4e99983b542c42a2c21b6bd473830f04abb6500c354ea02a5a69a83f309"
        );
        assert_eq!(
            hex(shared_hmac(&shared, PUT_SERVER_NONCE, &kvs)),
            "3a772eb00e86713a6d4cd6e722032cd2c8d213c9154a892f763bc095f619581a"
        );
        assert_eq!(
            hex(shared_hmac(&shared, &[0u8; 32], &kvs)),
            "91f9adc0f7470df10353a68f72dee9712bb05c88e0d23181971c8c138212194d"
        );
        assert_eq!(
            hex(shared_hmac(&shared, PUT_SERVER_NONCE, &[])),
            "2f781b8b59d17d8f314c60d753985eda2b5e8bae8df6bdf11e048192f0e0dbf8"
        );
    }

    /// The in-repo VLS vector (secret 0×32, unsorted kvs) from the reference notes §1.9.
    #[test]
    fn vls_vector_prefixes() {
        let shared = SharedSecret::from_bytes([0; 32]);
        let kvs = [
            KeyValue::new("foo", 0, [1]),
            KeyValue::new("bar", 0, [2]),
            KeyValue::new("baz", 0, [3]),
        ];
        assert!(hex::encode(shared_hmac(&shared, PUT_CLIENT_NONCE, &kvs).0).starts_with("2e3c1864"));
        assert!(hex::encode(shared_hmac(&shared, PUT_SERVER_NONCE, &kvs).0).starts_with("8fe3d55b"));
    }

    #[test]
    fn verify_is_exact() {
        let mac = shared_hmac(&shared(), PUT_CLIENT_NONCE, &[]);
        assert!(mac.verify(&mac.0));
        let mut wrong = mac.0;
        wrong[0] ^= 0x80;
        assert!(!mac.verify(&wrong));
        assert!(!mac.verify(&mac.0[..31]));
        assert!(!mac.verify(&[]));
        // Order, version and value all matter.
        let a = KeyValue::new("a", 0, *b"x");
        let b = KeyValue::new("b", 0, *b"y");
        let s = shared();
        assert_ne!(
            shared_hmac(&s, &[1], [&a, &b]),
            shared_hmac(&s, &[1], [&b, &a])
        );
        assert_ne!(
            shared_hmac(&s, &[1], [&a]),
            shared_hmac(&s, &[1], [&KeyValue::new("a", 1, *b"x")])
        );
    }
}
