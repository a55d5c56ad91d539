//! Payment tokens (keyserver.md §5): Privacy Pass publicly verifiable
//! tokens (RFC 9578, type 0x0002) over RSA blind signatures (RFC 9474,
//! RSABSSA-SHA384-PSS-Deterministic, 2048-bit), from the
//! `blind-rsa-signatures` crate.
//!
//! Why these: anyone holding the issuer's public key can check a token
//! (mirrors, the evidence checker), and the issuer cannot link a redeemed
//! token to the request it signed. The codecs here are the only ones: the
//! server, the client wallet and the offline issuer share them.
//!
//! No randomness of its own: the token nonce and the blinding RNG are
//! parameters.

use blind_rsa_signatures::reexports::rsa::rand_core::CryptoRng;
use blind_rsa_signatures::{
    BlindMessage, BlindSignature, BlindingResult, KeyPairSha384PSSDeterministic,
    PublicKeySha384PSSDeterministic, Secret, SecretKeySha384PSSDeterministic, Signature,
};
use sha2::{Digest, Sha256};

/// The operating system's RNG in the form the RSA code takes (for callers
/// at the edges: the wallet, the issuer).
pub use blind_rsa_signatures::DefaultRng as OsRng;

/// The Privacy Pass token type: blind RSA, 2048-bit.
pub const TOKEN_TYPE: u16 = 0x0002;
/// Nk: the modulus, signature and blinded-message length.
pub const NK: usize = 256;
/// The modulus size of issuer keys.
pub const MODULUS_BITS: usize = 2048;
/// token_type ‖ nonce ‖ challenge_digest ‖ token_key_id.
pub const TOKEN_INPUT_LEN: usize = 2 + 32 + 32 + 32;
/// A token: its input and the authenticator.
pub const TOKEN_LEN: usize = TOKEN_INPUT_LEN + NK;
/// token_type ‖ truncated_token_key_id ‖ blinded_msg.
pub const REQUEST_LEN: usize = 2 + 1 + NK;
/// blind_sig.
pub const RESPONSE_LEN: usize = NK;
/// A pending token as the wallet keeps it: nonce ‖ blinding secret ‖
/// blinded message.
pub const PENDING_LEN: usize = 32 + 2 * NK;
/// The largest SPKI accepted (a 2048-bit RSASSA-PSS key is 370 bytes).
const MAX_SPKI: usize = 800;

/// Why a token, request or key was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Wrong length or type: not a token of this scheme.
    #[error("malformed {what}: {problem}")]
    Malformed {
        /// Which structure.
        what: &'static str,
        /// What is wrong.
        problem: &'static str,
    },
    /// A token for another deployment (issuer name or origin).
    #[error("the token is for another challenge")]
    WrongChallenge,
    /// A token (or request) for a key this server does not accept.
    #[error("the token's key is not accepted here")]
    UnknownKey,
    /// The authenticator does not verify, or a finalised token fails.
    #[error("the signature does not verify")]
    BadSignature,
    /// An issuer key that is not a 2048-bit RSASSA-PSS key.
    #[error("bad issuer key: {0}")]
    BadKey(&'static str),
    /// The RSA library failed (not input-dependent).
    #[error("RSA operation failed: {0}")]
    Crypto(String),
}

fn malformed(what: &'static str, problem: &'static str) -> TokenError {
    TokenError::Malformed { what, problem }
}

/// The deployment's TokenChallenge (RFC 9578 §2.1): type, issuer name (the
/// primary domain), an empty redemption context and origin info (ORIGIN).
/// Fixed per deployment, so tokens can be bought in advance.
pub fn challenge(issuer_name: &str, origin: &str) -> Vec<u8> {
    let mut c = Vec::with_capacity(2 + 2 + issuer_name.len() + 1 + 2 + origin.len());
    c.extend_from_slice(&TOKEN_TYPE.to_be_bytes());
    c.extend_from_slice(&(issuer_name.len() as u16).to_be_bytes());
    c.extend_from_slice(issuer_name.as_bytes());
    c.push(0);
    c.extend_from_slice(&(origin.len() as u16).to_be_bytes());
    c.extend_from_slice(origin.as_bytes());
    c
}

/// SHA-256 of the deployment's TokenChallenge.
pub fn challenge_digest(issuer_name: &str, origin: &str) -> [u8; 32] {
    Sha256::digest(challenge(issuer_name, origin)).into()
}

/// An issuer's public key, with the SPKI its token_key_id hashes.
#[derive(Clone)]
pub struct IssuerKey {
    key: PublicKeySha384PSSDeterministic,
    spki: Vec<u8>,
    key_id: [u8; 32],
}

impl std::fmt::Debug for IssuerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "IssuerKey({})", hex_id(&self.key_id))
    }
}

fn hex_id(id: &[u8; 32]) -> String {
    id[..8].iter().map(|b| format!("{b:02x}")).collect()
}

impl IssuerKey {
    /// Parses an RSASSA-PSS SPKI (TKNPUBKEY) of a 2048-bit key.
    pub fn from_spki(spki: &[u8]) -> Result<IssuerKey, TokenError> {
        if spki.len() > MAX_SPKI {
            return Err(TokenError::BadKey("SPKI too long"));
        }
        let key = PublicKeySha384PSSDeterministic::from_spki(spki)
            .map_err(|_| TokenError::BadKey("not an RSASSA-PSS SPKI"))?;
        if key.components().n().len() != NK {
            return Err(TokenError::BadKey("not a 2048-bit modulus"));
        }
        // The canonical form only: the id is the hash of these bytes.
        let canonical = key
            .to_spki()
            .map_err(|_| TokenError::BadKey("cannot re-encode"))?;
        if canonical != spki {
            return Err(TokenError::BadKey("not the canonical SPKI"));
        }
        Ok(IssuerKey {
            key,
            key_id: Sha256::digest(spki).into(),
            spki: spki.to_vec(),
        })
    }

    /// The SPKI (TKNPUBKEY, in b64).
    pub fn spki(&self) -> &[u8] {
        &self.spki
    }

    /// token_key_id = SHA-256(SPKI).
    pub fn key_id(&self) -> &[u8; 32] {
        &self.key_id
    }

    /// Blinds a fresh token for this key (the client's half of issuance):
    /// `nonce` must be random and used once; `rng` draws the blinding.
    pub fn blind<R: CryptoRng + ?Sized>(
        &self,
        challenge_digest: &[u8; 32],
        nonce: [u8; 32],
        rng: &mut R,
    ) -> Result<(TokenRequest, Pending), TokenError> {
        let input = token_input(&nonce, challenge_digest, &self.key_id);
        let blinded = self
            .key
            .blind(rng, input)
            .map_err(|e| TokenError::Crypto(e.to_string()))?;
        let blinded_msg: [u8; NK] = blinded
            .blind_message
            .0
            .as_slice()
            .try_into()
            .map_err(|_| TokenError::Crypto("blinded message length".into()))?;
        let secret: [u8; NK] = blinded
            .secret
            .0
            .as_slice()
            .try_into()
            .map_err(|_| TokenError::Crypto("blinding secret length".into()))?;
        Ok((
            TokenRequest {
                truncated_key_id: self.key_id[31],
                blinded_msg,
            },
            Pending {
                nonce,
                secret: Box::new(secret),
                blinded_msg: Box::new(blinded_msg),
            },
        ))
    }

    /// Unblinds the issuer's response into a token and checks it under
    /// this key (a bad response is refused, never stored).
    pub fn finalize(
        &self,
        challenge_digest: &[u8; 32],
        pending: &Pending,
        response: &TokenResponse,
    ) -> Result<Token, TokenError> {
        let input = token_input(&pending.nonce, challenge_digest, &self.key_id);
        let blinding = BlindingResult {
            blind_message: BlindMessage(pending.blinded_msg.to_vec()),
            secret: Secret(pending.secret.to_vec()),
            msg_randomizer: None,
        };
        let sig = self
            .key
            .finalize(
                &BlindSignature(response.blind_sig.to_vec()),
                &blinding,
                input,
            )
            .map_err(|_| TokenError::BadSignature)?;
        let authenticator: [u8; NK] = sig
            .0
            .as_slice()
            .try_into()
            .map_err(|_| TokenError::BadSignature)?;
        Ok(Token {
            nonce: pending.nonce,
            challenge_digest: *challenge_digest,
            key_id: self.key_id,
            authenticator: Box::new(authenticator),
        })
    }

    fn verifies(&self, token: &Token) -> bool {
        self.key
            .verify(
                &Signature(token.authenticator.to_vec()),
                None,
                token.input(),
            )
            .is_ok()
    }
}

fn token_input(nonce: &[u8; 32], digest: &[u8; 32], key_id: &[u8; 32]) -> [u8; TOKEN_INPUT_LEN] {
    let mut out = [0u8; TOKEN_INPUT_LEN];
    out[..2].copy_from_slice(&TOKEN_TYPE.to_be_bytes());
    out[2..34].copy_from_slice(nonce);
    out[34..66].copy_from_slice(digest);
    out[66..98].copy_from_slice(key_id);
    out
}

/// The issuer's secret key (the 0600 `token_issuer_key` file).
pub struct IssuerSecret {
    key: SecretKeySha384PSSDeterministic,
    public: IssuerKey,
}

impl std::fmt::Debug for IssuerSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "IssuerSecret({}, redacted)",
            hex_id(self.public.key_id())
        )
    }
}

impl IssuerSecret {
    /// A fresh 2048-bit key.
    pub fn generate<R: CryptoRng + ?Sized>(rng: &mut R) -> Result<IssuerSecret, TokenError> {
        let pair = KeyPairSha384PSSDeterministic::generate(rng, MODULUS_BITS)
            .map_err(|e| TokenError::Crypto(e.to_string()))?;
        Self::from_secret(pair.sk)
    }

    fn from_secret(key: SecretKeySha384PSSDeterministic) -> Result<IssuerSecret, TokenError> {
        let pk = key
            .public_key()
            .map_err(|_| TokenError::BadKey("no public key"))?;
        let spki = pk
            .to_spki()
            .map_err(|_| TokenError::BadKey("cannot encode the SPKI"))?;
        Ok(IssuerSecret {
            public: IssuerKey::from_spki(&spki)?,
            key,
        })
    }

    /// Reads the PEM (PKCS#8) form.
    pub fn from_pem(pem: &str) -> Result<IssuerSecret, TokenError> {
        let key = SecretKeySha384PSSDeterministic::from_pem(pem)
            .map_err(|_| TokenError::BadKey("not an RSA private key in PEM"))?;
        Self::from_secret(key)
    }

    /// The PEM (PKCS#8) form, for the 0600 key file.
    pub fn to_pem(&self) -> Result<String, TokenError> {
        self.key
            .to_pem()
            .map_err(|e| TokenError::Crypto(e.to_string()))
    }

    /// The public half.
    pub fn public(&self) -> &IssuerKey {
        &self.public
    }

    /// Signs one blinded request (the issuer's half of issuance). A request
    /// for another key is refused, so a client cannot be handed a token it
    /// did not ask for.
    pub fn sign(&self, request: &TokenRequest) -> Result<TokenResponse, TokenError> {
        if request.truncated_key_id != self.public.key_id[31] {
            return Err(TokenError::UnknownKey);
        }
        let sig = self
            .key
            .blind_sign(request.blinded_msg)
            .map_err(|_| malformed("TokenRequest", "blinded message out of range"))?;
        let blind_sig: [u8; NK] = sig
            .0
            .as_slice()
            .try_into()
            .map_err(|_| TokenError::Crypto("blind signature length".into()))?;
        Ok(TokenResponse {
            blind_sig: Box::new(blind_sig),
        })
    }
}

/// A finished token (354 bytes on the wire, b64 in JSON).
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    /// The client's random nonce.
    pub nonce: [u8; 32],
    /// SHA-256 of the TokenChallenge it was made for.
    pub challenge_digest: [u8; 32],
    /// The issuer key's id.
    pub key_id: [u8; 32],
    /// The RSA signature over the token input.
    pub authenticator: Box<[u8; NK]>,
}

impl std::fmt::Debug for Token {
    // A token is bearer money: its nonce is not logged.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Token(key {}, redacted)", hex_id(&self.key_id))
    }
}

impl Token {
    /// Parses the wire form.
    pub fn parse(bytes: &[u8]) -> Result<Token, TokenError> {
        if bytes.len() != TOKEN_LEN {
            return Err(malformed("Token", "not 354 bytes"));
        }
        if bytes[..2] != TOKEN_TYPE.to_be_bytes() {
            return Err(malformed("Token", "not token type 0x0002"));
        }
        let field = |at: usize| -> [u8; 32] {
            let mut b = [0u8; 32];
            b.copy_from_slice(&bytes[at..at + 32]);
            b
        };
        let mut authenticator = Box::new([0u8; NK]);
        authenticator.copy_from_slice(&bytes[TOKEN_INPUT_LEN..]);
        Ok(Token {
            nonce: field(2),
            challenge_digest: field(34),
            key_id: field(66),
            authenticator,
        })
    }

    /// Parses the b64 form of a JSON member.
    pub fn from_b64(s: &str) -> Result<Token, TokenError> {
        let bytes = crate::b64::decode(s).ok_or_else(|| malformed("Token", "not base64"))?;
        Token::parse(&bytes)
    }

    /// The wire form.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = self.input().to_vec();
        out.extend_from_slice(&self.authenticator[..]);
        out
    }

    /// The b64 wire form.
    pub fn to_b64(&self) -> String {
        crate::b64::encode(&self.to_bytes())
    }

    /// The signed token input.
    pub fn input(&self) -> [u8; TOKEN_INPUT_LEN] {
        token_input(&self.nonce, &self.challenge_digest, &self.key_id)
    }

    /// token_key_id ‖ nonce: what the spent set keys on.
    pub fn spend_id(&self) -> [u8; 64] {
        let mut id = [0u8; 64];
        id[..32].copy_from_slice(&self.key_id);
        id[32..].copy_from_slice(&self.nonce);
        id
    }

    /// Redemption's stateless half (§5): this deployment's challenge, an
    /// accepted key and a valid authenticator. Whether it was spent is the
    /// store's question.
    pub fn verify(
        &self,
        challenge_digest: &[u8; 32],
        accepted: &[IssuerKey],
    ) -> Result<(), TokenError> {
        if &self.challenge_digest != challenge_digest {
            return Err(TokenError::WrongChallenge);
        }
        let key = accepted
            .iter()
            .find(|k| k.key_id == self.key_id)
            .ok_or(TokenError::UnknownKey)?;
        if key.verifies(self) {
            Ok(())
        } else {
            Err(TokenError::BadSignature)
        }
    }
}

/// A blinded request (RFC 9578 §6.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenRequest {
    /// The last byte of the key id.
    pub truncated_key_id: u8,
    /// The blinded token input.
    pub blinded_msg: [u8; NK],
}

impl TokenRequest {
    /// Parses the wire form.
    pub fn parse(bytes: &[u8]) -> Result<TokenRequest, TokenError> {
        if bytes.len() != REQUEST_LEN {
            return Err(malformed("TokenRequest", "not 259 bytes"));
        }
        if bytes[..2] != TOKEN_TYPE.to_be_bytes() {
            return Err(malformed("TokenRequest", "not token type 0x0002"));
        }
        let mut blinded_msg = [0u8; NK];
        blinded_msg.copy_from_slice(&bytes[3..]);
        Ok(TokenRequest {
            truncated_key_id: bytes[2],
            blinded_msg,
        })
    }

    /// The wire form.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(REQUEST_LEN);
        out.extend_from_slice(&TOKEN_TYPE.to_be_bytes());
        out.push(self.truncated_key_id);
        out.extend_from_slice(&self.blinded_msg);
        out
    }
}

/// A blind signature (RFC 9578 §6.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenResponse {
    /// The blind signature.
    pub blind_sig: Box<[u8; NK]>,
}

impl TokenResponse {
    /// Parses the wire form.
    pub fn parse(bytes: &[u8]) -> Result<TokenResponse, TokenError> {
        let blind_sig: [u8; NK] = bytes
            .try_into()
            .map_err(|_| malformed("TokenResponse", "not 256 bytes"))?;
        Ok(TokenResponse {
            blind_sig: Box::new(blind_sig),
        })
    }

    /// The wire form.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.blind_sig.to_vec()
    }
}

/// What the wallet keeps between request and finalize: the nonce and the
/// blinding secret (which unlinks the token from the request; redacted).
#[derive(Clone)]
pub struct Pending {
    nonce: [u8; 32],
    secret: Box<[u8; NK]>,
    blinded_msg: Box<[u8; NK]>,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pending(redacted)")
    }
}

impl Pending {
    /// nonce ‖ secret ‖ blinded message, for the wallet's file.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(PENDING_LEN);
        out.extend_from_slice(&self.nonce);
        out.extend_from_slice(&self.secret[..]);
        out.extend_from_slice(&self.blinded_msg[..]);
        out
    }

    /// Reads [`Pending::to_bytes`].
    pub fn parse(bytes: &[u8]) -> Result<Pending, TokenError> {
        if bytes.len() != PENDING_LEN {
            return Err(malformed("pending token", "wrong length"));
        }
        let mut nonce = [0u8; 32];
        nonce.copy_from_slice(&bytes[..32]);
        let mut secret = Box::new([0u8; NK]);
        secret.copy_from_slice(&bytes[32..32 + NK]);
        let mut blinded_msg = Box::new([0u8; NK]);
        blinded_msg.copy_from_slice(&bytes[32 + NK..]);
        Ok(Pending {
            nonce,
            secret,
            blinded_msg,
        })
    }

    /// The blinded message this was made for (to pair a response with it).
    pub fn blinded_msg(&self) -> &[u8; NK] {
        &self.blinded_msg
    }
}
