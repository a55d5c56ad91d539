//! Identities, the ECDH shared secret and the bearer token (lss-protocol.md §2).
//!
//! `shared = SHA-256(compressed ECDH point)` (libsecp256k1's default ECDH) and
//! `token = SHA-256(shared)`. The server authenticates a request by recomputing
//! the token from the presented client id; a namespace is keyed by the
//! *normalised* (compressed) client id, so both encodings of one key reach the
//! same data.

use secp256k1::{ecdh, PublicKey, Secp256k1, SecretKey};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Why a request's `Auth` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// `client_id` is not a secp256k1 public key in any encoding.
    #[error("invalid client id")]
    InvalidClientId,
    /// The token is not SHA-256 of the shared secret of this client and server.
    #[error("invalid auth token")]
    InvalidToken,
}

/// A client's identity: its public key, always held compressed (33 bytes).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId([u8; 33]);

impl ClientId {
    /// Bytes of a client id (a compressed public key).
    pub const LEN: usize = 33;

    /// Parses a compressed (33-byte) or uncompressed (65-byte) public key and
    /// normalises it to the compressed form.
    pub fn parse(bytes: &[u8]) -> Result<Self, AuthError> {
        PublicKey::from_slice(bytes)
            .map(Self::from)
            .map_err(|_| AuthError::InvalidClientId)
    }

    /// The compressed key bytes, which name the namespace in every store.
    pub fn as_bytes(&self) -> &[u8; 33] {
        &self.0
    }

    /// The public key.
    pub fn public_key(&self) -> PublicKey {
        // Invariant: the bytes came from a valid `PublicKey`.
        PublicKey::from_slice(&self.0).expect("ClientId holds a valid key")
    }

    /// A short form for logs: the first 8 hex digits.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..4])
    }
}

impl From<PublicKey> for ClientId {
    fn from(key: PublicKey) -> Self {
        ClientId(key.serialize())
    }
}

impl std::fmt::Debug for ClientId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ClientId({})", hex::encode(self.0))
    }
}

impl std::fmt::Display for ClientId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

/// The ECDH secret shared by a client and the server; the key of every MAC.
#[derive(Clone, PartialEq, Eq)]
pub struct SharedSecret([u8; 32]);

impl SharedSecret {
    /// libsecp256k1's default ECDH: SHA-256 of the compressed shared point.
    /// Either side computes it from its own secret and the other's public key.
    pub fn derive(their_public: &PublicKey, our_secret: &SecretKey) -> Self {
        SharedSecret(ecdh::SharedSecret::new(their_public, our_secret).secret_bytes())
    }

    /// Wraps raw secret bytes (a signer that derived them elsewhere).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        SharedSecret(bytes)
    }

    /// The secret bytes. Never log them.
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }

    /// The bearer token a client presents: `SHA-256(shared)`.
    pub fn token(&self) -> Token {
        Token(Sha256::digest(self.0).into())
    }
}

impl std::fmt::Debug for SharedSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedSecret(<redacted>)")
    }
}

/// `SHA-256(shared)`: the static bearer credential of a client.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Token(pub [u8; 32]);

impl Token {
    /// Whether `presented` is this token, in constant time: a timing leak would
    /// let an attacker guess a victim's token byte by byte.
    pub fn verify(&self, presented: &[u8]) -> bool {
        presented.len() == 32 && bool::from(self.0.ct_eq(presented))
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// The server's identity key pair.
#[derive(Clone)]
pub struct ServerKey {
    secret: SecretKey,
    public: PublicKey,
    /// For BIP340 signing: deriving it costs a point multiplication, as
    /// much as the signature itself, so it is derived once.
    keypair: secp256k1::Keypair,
}

impl ServerKey {
    /// Wraps a secret key.
    pub fn new(secret: SecretKey) -> Self {
        let public = secret.public_key(&Secp256k1::signing_only());
        let keypair = secp256k1::Keypair::from_secret_key(secp256k1::SECP256K1, &secret);
        ServerKey {
            secret,
            public,
            keypair,
        }
    }

    /// Parses the 64-hex-character form the reference `lssd` keeps in
    /// `~/.lss/server_key` (surrounding whitespace is ignored).
    pub fn from_hex(text: &str) -> Result<Self, KeyFileError> {
        let text = text.trim();
        if text.len() != 64 {
            return Err(KeyFileError::Length(text.len()));
        }
        let bytes = hex::decode(text).map_err(|_| KeyFileError::NotHex)?;
        SecretKey::from_slice(&bytes)
            .map(Self::new)
            .map_err(|_| KeyFileError::OutOfRange)
    }

    /// The 64-hex-character form, for the key file.
    pub fn to_hex(&self) -> String {
        hex::encode(self.secret.secret_bytes())
    }

    /// The public key clients pin.
    pub fn public_key(&self) -> PublicKey {
        self.public
    }

    /// `InfoReply.server_id`: the compressed public key.
    pub fn server_id(&self) -> [u8; 33] {
        self.public.serialize()
    }

    /// A BIP340 Schnorr signature of `digest` with the server key (no
    /// auxiliary randomness: deterministic, as BIP340 permits), for
    /// statements anyone can check against `server_id`.
    pub fn sign_schnorr(&self, digest: &[u8; 32]) -> [u8; 64] {
        let msg = secp256k1::Message::from_digest(*digest);
        secp256k1::SECP256K1
            .sign_schnorr_no_aux_rand(&msg, &self.keypair)
            .serialize()
    }

    /// The shared secret with a client.
    pub fn shared_secret(&self, client: &ClientId) -> SharedSecret {
        SharedSecret::derive(&client.public_key(), &self.secret)
    }

    /// Checks a request's `Auth`: parses and normalises the client id and
    /// verifies its token in constant time. Returns the namespace owner and the
    /// secret to check and make MACs with.
    pub fn authenticate(
        &self,
        client_id: &[u8],
        token: &[u8],
    ) -> Result<(ClientId, SharedSecret), AuthError> {
        let client = ClientId::parse(client_id)?;
        let shared = self.shared_secret(&client);
        if !shared.token().verify(token) {
            return Err(AuthError::InvalidToken);
        }
        Ok((client, shared))
    }
}

impl std::fmt::Debug for ServerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ServerKey({})", hex::encode(self.server_id()))
    }
}

/// Why a server key file's text is not a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyFileError {
    /// Not 64 characters long.
    #[error("expected 64 hex characters, found {0}")]
    Length(usize),
    /// Not hex.
    #[error("not hexadecimal")]
    NotHex,
    /// Zero or not below the curve order.
    #[error("not a valid secp256k1 secret key")]
    OutOfRange,
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn key(byte: u8) -> SecretKey {
        SecretKey::from_slice(&[byte; 32]).expect("valid test key")
    }

    /// lss-protocol.md §6.
    #[test]
    fn spec_vectors() {
        let secp = Secp256k1::new();
        let client_pk = key(0x11).public_key(&secp);
        let server = ServerKey::new(key(0x22));
        assert_eq!(
            hex::encode(client_pk.serialize()),
            "034f355bdcb7cc0af728ef3cceb9615d90684bb5b2ca5f859ab0f0b704075871aa"
        );
        assert_eq!(
            hex::encode(server.server_id()),
            "02466d7fcae563e5cb09a0d1870bb580344804617879a14949cf22285f1bae3f27"
        );
        let shared = server.shared_secret(&ClientId::from(client_pk));
        assert_eq!(
            hex::encode(shared.expose()),
            "b36b6d195982c5be874d6d542dc268234379e1ae4ff1709402135b7de5cf0766"
        );
        // Both sides derive the same secret.
        assert_eq!(
            shared,
            SharedSecret::derive(&server.public_key(), &key(0x11))
        );
        assert_eq!(
            hex::encode(shared.token().0),
            "f035251054f3040b8ae6c87040d1d562e857ed688f6818433375f21c13df0054"
        );
    }

    #[test]
    fn authenticate_accepts_both_encodings_into_one_namespace() {
        let secp = Secp256k1::new();
        let client_pk = key(0x11).public_key(&secp);
        let server = ServerKey::new(key(0x22));
        let token = SharedSecret::derive(&server.public_key(), &key(0x11)).token();
        let (a, _) = server
            .authenticate(&client_pk.serialize(), &token.0)
            .expect("compressed");
        let (b, _) = server
            .authenticate(&client_pk.serialize_uncompressed(), &token.0)
            .expect("uncompressed");
        assert_eq!(a, b);
        assert_eq!(a.as_bytes(), &client_pk.serialize());
    }

    #[test]
    fn authenticate_rejects_bad_ids_and_tokens() {
        let server = ServerKey::new(key(0x22));
        let client_pk = key(0x11).public_key(&Secp256k1::new());
        let token = SharedSecret::derive(&server.public_key(), &key(0x11)).token();
        // x = 0xff..ff is above the field prime; 0x04 ‖ 0x04.. is not on the curve.
        let mut x_too_big = [0xff_u8; 33];
        x_too_big[0] = 0x02;
        for bad_id in [
            &[][..],
            &x_too_big[..],
            &[4u8; 65][..],
            &[0u8; 64][..],
            &[2u8; 32][..],
        ] {
            assert_eq!(
                server.authenticate(bad_id, &token.0),
                Err(AuthError::InvalidClientId)
            );
        }
        let mut wrong = token.0;
        wrong[31] ^= 1;
        for bad_token in [&wrong[..], &token.0[..31], &[][..]] {
            assert_eq!(
                server.authenticate(&client_pk.serialize(), bad_token),
                Err(AuthError::InvalidToken)
            );
        }
    }

    #[test]
    fn key_file_text() {
        let server = ServerKey::new(key(0x22));
        let again = ServerKey::from_hex(&format!("{}\n", server.to_hex())).expect("round trip");
        assert_eq!(again.server_id(), server.server_id());
        assert_eq!(
            ServerKey::from_hex("abc").unwrap_err(),
            KeyFileError::Length(3)
        );
        assert_eq!(
            ServerKey::from_hex(&"zz".repeat(32)).unwrap_err(),
            KeyFileError::NotHex
        );
        assert_eq!(
            ServerKey::from_hex(&"00".repeat(32)).unwrap_err(),
            KeyFileError::OutOfRange
        );
        assert_eq!(
            ServerKey::from_hex(&"ff".repeat(32)).unwrap_err(),
            KeyFileError::OutOfRange
        );
    }
}
