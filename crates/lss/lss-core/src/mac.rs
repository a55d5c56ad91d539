//! The MACs of the protocol.
//!
//! **Unframed** (the reference's, lss-protocol.md §2), [`shared_hmac`]:
//! `HMAC-SHA256(key = shared, msg = shared ‖ nonce ‖ Σ key ‖ version_be8 ‖ value)`,
//! with no framing between fields, kept bit for bit so every existing client
//! works. Its flaw: one entry whose value is the concatenation of several
//! entries (`a‖v0‖x`, then `b‖v1‖y` as the value of `a`) has the same MAC as
//! the several, so whoever relays a put can regroup it and the server stores
//! something else than the client meant, under a valid acknowledgement.
//!
//! **Framed** (Lightkeeper's extension, docs/protocol.md), [`framed_hmac`]:
//! `HMAC-SHA256(key = HMAC-SHA256(shared, "lightkeeper/framed-mac/v1"),
//! msg = len32(nonce) ‖ nonce ‖ count64 ‖ Σ len32(key) ‖ key ‖ version_be8 ‖
//! len32(value) ‖ value)`, every length big-endian. Every field is delimited,
//! so no two different lists of entries share a message; the derived key
//! keeps the two schemes from ever sharing a MAC.

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
    let mut mac = MacScheme::Unframed.start(shared, nonce, 0);
    for kv in kvs {
        mac.update(kv);
    }
    mac.finish()
}

/// A MAC computed entry by entry, for results read a page at a time.
#[derive(Clone)]
pub struct MacWriter {
    mac: Hmac<Sha256>,
    framed: bool,
}

impl MacWriter {
    /// Adds the next entry.
    pub fn update(&mut self, kv: &KeyValue) {
        if self.framed {
            self.mac.update(&len32(kv.key.len()));
            self.mac.update(kv.key.as_bytes());
            self.mac.update(&kv.version.to_be_bytes());
            self.mac.update(&len32(kv.value.len()));
            self.mac.update(&kv.value);
        } else {
            self.mac.update(kv.key.as_bytes());
            self.mac.update(&kv.version.to_be_bytes());
            self.mac.update(&kv.value);
        }
    }

    /// The MAC over every entry added.
    pub fn finish(self) -> Mac {
        Mac(self.mac.finalize().into_bytes().into())
    }
}

/// Which MAC a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MacScheme {
    /// The reference's [`shared_hmac`].
    #[default]
    Unframed,
    /// Lightkeeper's [`framed_hmac`].
    Framed,
}

impl MacScheme {
    /// The MAC over `kvs` with `nonce` in this scheme.
    pub fn mac<'a>(
        self,
        shared: &SharedSecret,
        nonce: &[u8],
        kvs: impl IntoIterator<Item = &'a KeyValue>,
    ) -> Mac {
        match self {
            MacScheme::Unframed => shared_hmac(shared, nonce, kvs),
            MacScheme::Framed => framed_hmac(shared, nonce, kvs),
        }
    }

    /// A MAC in this scheme to be fed `count` entries one by one (the framed
    /// MAC commits to the count first; the unframed one ignores it).
    pub fn start(self, shared: &SharedSecret, nonce: &[u8], count: u64) -> MacWriter {
        match self {
            MacScheme::Unframed => {
                let mut mac = Hmac::<Sha256>::new_from_slice(shared.expose())
                    .expect("HMAC accepts keys of any length"); // invariant of RFC 2104
                mac.update(shared.expose());
                mac.update(nonce);
                MacWriter { mac, framed: false }
            }
            MacScheme::Framed => {
                let mut derive = Hmac::<Sha256>::new_from_slice(shared.expose())
                    .expect("HMAC accepts keys of any length");
                derive.update(FRAMED_KEY_LABEL);
                let key = derive.finalize().into_bytes();
                let mut mac =
                    Hmac::<Sha256>::new_from_slice(&key).expect("HMAC accepts keys of any length");
                mac.update(&len32(nonce.len()));
                mac.update(nonce);
                mac.update(&count.to_be_bytes());
                MacWriter { mac, framed: true }
            }
        }
    }
}

/// What a server advertises (in `InfoReply.extensions`) when it computes
/// [`framed_hmac`] for requests that ask for it.
pub const FRAMED_MAC_EXTENSION: &str = "framed-mac-v1";

/// The request header a client sends its registration token in, on a
/// server that admits listed and registered clients only (lssd's
/// `access = allowlist`); servers that do not know it ignore it.
pub const REGISTRATION_TOKEN_HEADER: &str = "lightkeeper-registration-token";

const FRAMED_KEY_LABEL: &[u8] = b"lightkeeper/framed-mac/v1";

/// The framed MAC: every field length-delimited, under a key derived for it.
pub fn framed_hmac<'a>(
    shared: &SharedSecret,
    nonce: &[u8],
    kvs: impl IntoIterator<Item = &'a KeyValue>,
) -> Mac {
    let kvs: Vec<&KeyValue> = kvs.into_iter().collect();
    let mut mac = MacScheme::Framed.start(shared, nonce, kvs.len() as u64);
    for kv in kvs {
        mac.update(kv);
    }
    mac.finish()
}

/// A length as 4 bytes, big-endian. Lengths over 4 GiB cannot occur: every
/// request is bounded far below by the transport.
fn len32(len: usize) -> [u8; 4] {
    u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes()
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

    /// docs/protocol.md, "Framed MACs": the vectors published there.
    #[test]
    fn framed_vectors() {
        let shared = shared();
        let kvs = [KeyValue::new("a", 0, *b"x"), KeyValue::new("b", 1, *b"")];
        let hex = |mac: Mac| hex::encode(mac.0);
        assert_eq!(
            hex(framed_hmac(&shared, PUT_CLIENT_NONCE, &kvs)),
            FRAMED_VECTORS[0]
        );
        assert_eq!(
            hex(framed_hmac(&shared, PUT_SERVER_NONCE, &kvs)),
            FRAMED_VECTORS[1]
        );
        assert_eq!(
            hex(framed_hmac(&shared, &[0u8; 32], &kvs)),
            FRAMED_VECTORS[2]
        );
        assert_eq!(
            hex(framed_hmac(&shared, PUT_SERVER_NONCE, &[])),
            FRAMED_VECTORS[3]
        );
    }

    /// Computed independently (Python's hmac and struct, from the formula in
    /// docs/protocol.md), not by this code.
    const FRAMED_VECTORS: [&str; 4] = [
        "f9358869117b9aab775c1695173900b5597ba5ca3642919a1da85cd6874f13d2",
        "4baec3524ae558f43065c2f594df4bd030061ec4fe3465f3531bf952ad861462",
        "abf046f70e582b99f4f2096d5855f249b8615d3995043a3122f3f0dcd36e29a8",
        "ac644e07b9cb0b7f1cd5e3dafd0394f28c33395b027ed2d35bd410a1531f608d",
    ];

    #[test]
    fn regrouped_entries_share_the_unframed_mac_but_not_the_framed_one() {
        let s = shared();
        let two = [KeyValue::new("a", 0, *b"x"), KeyValue::new("b", 1, *b"y")];
        // `a` at version 0 whose value is "x" ‖ "b" ‖ version 1 ‖ "y".
        let mut value = b"x".to_vec();
        value.extend_from_slice(b"b");
        value.extend_from_slice(&1i64.to_be_bytes());
        value.extend_from_slice(b"y");
        let one = [KeyValue::new("a", 0, value)];
        assert_eq!(
            shared_hmac(&s, PUT_SERVER_NONCE, &two),
            shared_hmac(&s, PUT_SERVER_NONCE, &one),
            "the reference's flaw"
        );
        assert_ne!(
            framed_hmac(&s, PUT_SERVER_NONCE, &two),
            framed_hmac(&s, PUT_SERVER_NONCE, &one)
        );
        // The schemes never agree.
        assert_ne!(
            framed_hmac(&s, PUT_SERVER_NONCE, &two),
            shared_hmac(&s, PUT_SERVER_NONCE, &two)
        );
        assert_eq!(
            MacScheme::Framed.mac(&s, &[7], &two),
            framed_hmac(&s, &[7], &two)
        );
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
