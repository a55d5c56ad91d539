//! UIDMessage, KeyEntry and the server's UIDMessageReply (keyserver.md
//! §3.2, §3.5), with the v1 profile every message must meet and the
//! encrypted blob that binds a stored UID to its chain entry.

use aes::cipher::{KeyIvInit, StreamCipher};
use ed25519_dalek::VerifyingKey;
use sha2::{Digest, Sha256, Sha512};

use crate::b64;
use crate::entry::{uid_index, Entry};
use crate::error::RpcError;
use crate::identity;
use crate::lcj::Lcj;
use crate::lcj_record;
use crate::sig::{self, Ctx};

/// The one cipher suite of v1.
pub const SUITE: &str = "NACL HKDF AES256-CTR SHA512-HMAC ED25519 ECDHE25519";
/// The UIDMessage VERSION of v1.
pub const VERSION: &str = "1.0";
/// The largest LCJ(UIDMessage) accepted.
pub const MAX_UID_BYTES: usize = 16 << 10;
/// The longest ordinary string member.
pub const MAX_STRING: usize = 255;

type Aes256Ctr = ctr::Ctr128BE<aes::Aes256>;

lcj_record! {
    /// A public key with its suite and function (§3.2).
    pub struct KeyEntry {
        /// [`SUITE`], or "" in the zero entry.
        cipher_suite: String = "CIPHERSUITE",
        /// `ED25519` or `ECDHE25519`.
        function: String = "FUNCTION",
        /// b64(SHA-512(pubkey)).
        hash: String = "HASH",
        /// b64(32).
        pubkey: String = "PUBKEY",
    }
}

/// The two key functions of v1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Function {
    /// A signing key.
    Ed25519,
    /// A Diffie-Hellman key.
    Ecdhe25519,
}

impl Function {
    fn as_str(self) -> &'static str {
        match self {
            Function::Ed25519 => "ED25519",
            Function::Ecdhe25519 => "ECDHE25519",
        }
    }
}

impl KeyEntry {
    /// The entry for a public key.
    pub fn new(function: Function, pubkey: &[u8; 32]) -> KeyEntry {
        KeyEntry {
            cipher_suite: SUITE.to_string(),
            function: function.as_str().to_string(),
            hash: b64::encode(&Sha512::digest(pubkey)),
            pubkey: b64::encode(pubkey),
        }
    }

    /// Whether this is the all-empty entry.
    pub fn is_zero(&self) -> bool {
        *self == KeyEntry::default()
    }

    /// Checks suite, function, hash and key, returning the key bytes.
    /// Small-order keys are refused: an Ed25519 one would verify forged
    /// signatures, an X25519 one gives every peer the all-zero secret.
    pub fn check(&self, function: Function, field: &str) -> Result<[u8; 32], RpcError> {
        let bad = |problem: &str| RpcError::params(field, problem);
        if self.cipher_suite != SUITE {
            return Err(bad("unknown CIPHERSUITE"));
        }
        if self.function != function.as_str() {
            return Err(bad("wrong FUNCTION"));
        }
        let pk = b64::exact::<32>(&self.pubkey).ok_or_else(|| bad("PUBKEY is not b64(32)"))?;
        if self.hash != b64::encode(&Sha512::digest(pk)) {
            return Err(bad("HASH is not SHA-512(PUBKEY)"));
        }
        match function {
            Function::Ed25519 => {
                let vk = VerifyingKey::from_bytes(&pk).map_err(|_| bad("not an Ed25519 key"))?;
                if vk.is_weak() {
                    return Err(bad("small-order Ed25519 key"));
                }
            }
            Function::Ecdhe25519 => {
                if x25519_small_order(&pk) {
                    return Err(bad("small-order X25519 key"));
                }
            }
        }
        Ok(pk)
    }

    /// The Ed25519 key, for an entry that passed [`KeyEntry::check`].
    pub fn verifying_key(&self) -> Option<VerifyingKey> {
        VerifyingKey::from_bytes(&b64::exact::<32>(&self.pubkey)?).ok()
    }
}

/// Whether X25519 with `pk` yields all zeros for every scalar: a clamped
/// scalar is a multiple of 8, so the product vanishes exactly when the
/// point's order divides 8 (RFC 7748 §6.1), on the curve or its twist.
/// Computed as u([8]P) = 0 with a four-step ladder (one inversion), a
/// fifth of a full X25519.
pub fn x25519_small_order(pk: &[u8; 32]) -> bool {
    let eight = [true, false, false, false].into_iter();
    curve25519_dalek::montgomery::MontgomeryPoint(*pk)
        .mul_bits_be(eight)
        .to_bytes()
        == [0u8; 32]
}

lcj_record! {
    /// CHAINLINK, reserved for v2 and all zero in v1.
    pub struct ChainLink {
        /// AUTHORITATIVE.
        authoritative: bool = "AUTHORITATIVE",
        /// DOMAINS.
        domains: Vec<String> = "DOMAINS",
        /// IDENTITY.
        identity: String = "IDENTITY",
        /// LAST.
        last: String = "LAST",
        /// URI.
        uri: String = "URI",
    }
}

lcj_record! {
    /// PREFERENCES.
    pub struct Preferences {
        /// In preference order; v1: exactly [`SUITE`].
        cipher_suites: Vec<String> = "CIPHERSUITES",
        /// `strict` or `mandatory` (`optional` is reserved).
        forward_sec: String = "FORWARDSEC",
    }
}

lcj_record! {
    /// UIDCONTENT: what the user's signatures cover.
    pub struct UidContent {
        /// CHAINLINK (zero in v1).
        chain_link: ChainLink = "CHAINLINK",
        /// The mapped identity.
        identity: String = "IDENTITY",
        /// A chain entry (b64(153)) the user has seen; "" only at genesis.
        last_entry: String = "LASTENTRY",
        /// "" in v1.
        mix_address: String = "MIXADDRESS",
        /// 0 at creation, +1 per update.
        msg_count: u64 = "MSGCOUNT",
        /// Unix seconds.
        not_after: u64 = "NOTAFTER",
        /// Unix seconds.
        not_before: u64 = "NOTBEFORE",
        /// "" in v1.
        nym_address: String = "NYMADDRESS",
        /// PREFERENCES.
        preferences: Preferences = "PREFERENCES",
        /// Exactly one ECDHE25519 key.
        pubkeys: Vec<KeyEntry> = "PUBKEYS",
        /// [the identity's domain].
        repo_uris: Vec<String> = "REPOURIS",
        /// Zero, or the escrow Ed25519 key.
        sig_escrow: KeyEntry = "SIGESCROW",
        /// The signing key.
        sig_key: KeyEntry = "SIGKEY",
        /// [`VERSION`].
        version: String = "VERSION",
    }
}

lcj_record! {
    /// A UIDMessage: content and the user's signatures over it.
    pub struct UidMessage {
        /// By this message's SIGESCROW at creation, the previous one on
        /// escrow updates; or "".
        escrow_signature: String = "ESCROWSIGNATURE",
        /// "" in v1.
        link_authority: String = "LINKAUTHORITY",
        /// By the new SIGKEY.
        self_signature: String = "SELFSIGNATURE",
        /// What is signed.
        content: UidContent = "UIDCONTENT",
        /// By the previous SIGKEY on ordinary updates; or "".
        user_signature: String = "USERSIGNATURE",
    }
}

/// The keys of a UIDMessage that passed the v1 profile.
#[derive(Clone, Debug)]
pub struct ProfiledUid {
    /// SIGKEY.
    pub sig_key: VerifyingKey,
    /// SIGESCROW, if set.
    pub sig_escrow: Option<VerifyingKey>,
    /// The X25519 static key.
    pub static_key: [u8; 32],
    /// LASTENTRY, if not "".
    pub last_entry: Option<Entry>,
}

impl UidMessage {
    /// UIDHash U = SHA-256(LCJ(UIDMessage)).
    pub fn uid_hash(&self) -> [u8; 32] {
        uid_hash_of(&self.to_lcj())
    }

    /// Checks the v1 profile and every KeyEntry (§3.2); -32602 with the
    /// field at fault otherwise. Signatures are checked by the rules.
    pub fn check_profile(&self) -> Result<ProfiledUid, RpcError> {
        let bad = |field: &str, problem: &str| RpcError::params(field, problem);
        if self.to_lcj().len() > MAX_UID_BYTES {
            return Err(bad("UIDMessage", "larger than 16 KiB"));
        }
        let c = &self.content;
        if c.version != VERSION {
            return Err(bad("UIDCONTENT.VERSION", "must be \"1.0\""));
        }
        match identity::map(&c.identity) {
            Ok(m) if m == c.identity => {}
            Ok(_) => return Err(bad("UIDCONTENT.IDENTITY", "is not in mapped form")),
            Err(e) => return Err(bad("UIDCONTENT.IDENTITY", &e.to_string())),
        }
        c.sig_key.check(Function::Ed25519, "UIDCONTENT.SIGKEY")?;
        let sig_key = c.sig_key.verifying_key().ok_or(RpcError::Internal)?;
        let static_key = match c.pubkeys.as_slice() {
            [k] => k.check(Function::Ecdhe25519, "UIDCONTENT.PUBKEYS")?,
            _ => return Err(bad("UIDCONTENT.PUBKEYS", "exactly one ECDHE25519 key")),
        };
        let sig_escrow = if c.sig_escrow.is_zero() {
            None
        } else {
            c.sig_escrow
                .check(Function::Ed25519, "UIDCONTENT.SIGESCROW")?;
            if c.sig_escrow.pubkey == c.sig_key.pubkey {
                return Err(bad("UIDCONTENT.SIGESCROW", "equals SIGKEY"));
            }
            c.sig_escrow.verifying_key()
        };
        if c.repo_uris != [identity::domain(&c.identity)] {
            return Err(bad(
                "UIDCONTENT.REPOURIS",
                "must be [the identity's domain]",
            ));
        }
        if c.preferences.cipher_suites != [SUITE] {
            return Err(bad(
                "UIDCONTENT.PREFERENCES.CIPHERSUITES",
                "must be [the v1 suite]",
            ));
        }
        if !matches!(c.preferences.forward_sec.as_str(), "strict" | "mandatory") {
            return Err(bad(
                "UIDCONTENT.PREFERENCES.FORWARDSEC",
                "must be strict or mandatory",
            ));
        }
        if !c.mix_address.is_empty() || !c.nym_address.is_empty() {
            return Err(bad("UIDCONTENT.MIXADDRESS", "must be empty in v1"));
        }
        if c.chain_link != ChainLink::default() || !self.link_authority.is_empty() {
            return Err(bad("UIDCONTENT.CHAINLINK", "is reserved (zero in v1)"));
        }
        let last_entry = if c.last_entry.is_empty() {
            None
        } else {
            let raw = b64::decode(&c.last_entry)
                .ok_or_else(|| bad("UIDCONTENT.LASTENTRY", "is not base64"))?;
            Some(Entry::from_bytes(&raw).map_err(|e| bad("UIDCONTENT.LASTENTRY", &e.to_string()))?)
        };
        for (field, s) in [
            ("SELFSIGNATURE", &self.self_signature),
            ("USERSIGNATURE", &self.user_signature),
            ("ESCROWSIGNATURE", &self.escrow_signature),
        ] {
            if !s.is_empty() && b64::exact::<64>(s).is_none() {
                return Err(bad(field, "is not b64(64)"));
            }
        }
        if self.self_signature.is_empty() {
            return Err(bad("SELFSIGNATURE", "is required"));
        }
        Ok(ProfiledUid {
            sig_key,
            sig_escrow,
            static_key,
            last_entry,
        })
    }

    /// Whether `signature` is `key`'s over this UIDCONTENT.
    pub fn signed_by(&self, key: &VerifyingKey, signature: &str) -> bool {
        sig::verify(key, Ctx::UidContent, &self.content, signature)
    }
}

lcj_record! {
    /// ENTRY of a UIDMessageReply: what the server signs.
    pub struct ReplyEntry {
        /// b64(153): the chain entry.
        hashchain_entry: String = "HASHCHAINENTRY",
        /// Its position.
        hashchain_pos: u64 = "HASHCHAINPOS",
        /// The log's origin.
        origin: String = "ORIGIN",
        /// Never decreases with position.
        timestamp: u64 = "TIMESTAMP",
        /// b64(UIDIndex ‖ IV2 ‖ AES-256-CTR(U, IV2, LCJ(UIDMessage))).
        uid_message_encrypted: String = "UIDMESSAGEENCRYPTED",
    }
}

lcj_record! {
    /// The server's signed promise that a UID sits at a position.
    pub struct UidMessageReply {
        /// What is signed.
        entry: ReplyEntry = "ENTRY",
        /// signer(HASHCHAINPOS) over `sig_input("uid-reply", ENTRY)`.
        server_signature: String = "SERVERSIGNATURE",
    }
}

/// Why a reply does not bind to its entry and UID (§3.5, §6.3 step 2).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BindError {
    /// HASHCHAINENTRY is not a valid entry.
    #[error("HASHCHAINENTRY is not an entry")]
    Entry,
    /// The blob is not b64 or is too short.
    #[error("UIDMESSAGEENCRYPTED is malformed")]
    Blob,
    /// The blob's prefix is not the entry's UIDIndex.
    #[error("UIDMESSAGEENCRYPTED does not start with the entry's UIDIndex")]
    Index,
    /// The decrypted UID does not hash to U.
    #[error("the decrypted UID does not hash to U")]
    Hash,
    /// The decrypted UID is not canonical LCJ of a UIDMessage.
    #[error("the decrypted UID is not a canonical UIDMessage: {0}")]
    Plaintext(String),
}

/// U of a UID's plaintext: SHA-256 of it (of its LCJ for a valid UID).
pub fn uid_hash_of(plain: &[u8]) -> [u8; 32] {
    Sha256::digest(plain).into()
}

/// Seals a UID for storage: b64(UIDIndex ‖ IV2 ‖ AES-256-CTR(U, IV2, LCJ)).
pub fn seal(msg: &UidMessage, iv2: &[u8; 16]) -> String {
    seal_plaintext(msg.to_lcj(), iv2)
}

/// [`seal`] of given plaintext bytes, U = SHA-256 of them (a faulty
/// server's non-canonical encoding in tests; [`open`] refuses it).
pub fn seal_plaintext(plain: Vec<u8>, iv2: &[u8; 16]) -> String {
    let u = uid_hash_of(&plain);
    let mut out = Vec::with_capacity(48 + plain.len());
    out.extend_from_slice(&uid_index(&u));
    out.extend_from_slice(iv2);
    let mut body = plain;
    Aes256Ctr::new(&u.into(), iv2.into()).apply_keystream(&mut body);
    out.extend_from_slice(&body);
    b64::encode(&out)
}

/// Opens a sealed UID with U, checking the UIDIndex prefix, that the
/// plaintext hashes to U and that it is canonical.
pub fn open(blob: &str, u: &[u8; 32]) -> Result<UidMessage, BindError> {
    let raw = b64::decode(blob).ok_or(BindError::Blob)?;
    if raw.len() < 48 {
        return Err(BindError::Blob);
    }
    if raw[..32] != uid_index(u) {
        return Err(BindError::Index);
    }
    let iv2: [u8; 16] = raw[32..48].try_into().map_err(|_| BindError::Blob)?;
    let mut plain = raw[48..].to_vec();
    Aes256Ctr::new(&(*u).into(), &iv2.into()).apply_keystream(&mut plain);
    if Sha256::digest(&plain)[..] != u[..] {
        return Err(BindError::Hash);
    }
    UidMessage::from_lcj(&plain).map_err(|e| BindError::Plaintext(e.to_string()))
}

impl UidMessageReply {
    /// The chain entry it names.
    pub fn chain_entry(&self) -> Result<Entry, BindError> {
        let raw = b64::decode(&self.entry.hashchain_entry).ok_or(BindError::Entry)?;
        Entry::from_bytes(&raw).map_err(|_| BindError::Entry)
    }

    /// Binds the reply to `identity`: the entry unlocks to U under the
    /// identity, the blob's prefix is UIDIndex and it decrypts to the UID.
    pub fn open_for(&self, identity: &str) -> Result<(Entry, UidMessage), BindError> {
        let entry = self.chain_entry()?;
        let u = entry.unlock(identity).map_err(|_| BindError::Index)?;
        let blob_index = b64::decode(&self.entry.uid_message_encrypted)
            .filter(|b| b.len() >= 32)
            .ok_or(BindError::Blob)?;
        if blob_index[..32] != entry.uid_index()[..] {
            return Err(BindError::Index);
        }
        Ok((entry, open(&self.entry.uid_message_encrypted, &u)?))
    }

    /// Whether the server signature verifies under `key`.
    pub fn signed_by(&self, key: &VerifyingKey) -> bool {
        sig::verify(key, Ctx::UidReply, &self.entry, &self.server_signature)
    }
}
