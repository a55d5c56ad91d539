//! C2SP signed notes (signed-note v1.0.0, tlog.md §3.3–§3.5): keys, verifier
//! keys, signature lines, signing and verifying.
//!
//! Stricter than `signed_note` 0.2.0 where tlog.md says so: a configured key
//! whose line fails rejects the note (the spec says SHOULD), a configured
//! key repeated rejects it, and Ed25519 is checked with `verify_strict`.

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ed25519_dalek::{Signature as Ed25519Signature, Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

/// Largest note.
pub const MAX_NOTE: usize = 64 * 1024;
/// Most signature lines.
pub const MAX_SIGNATURES: usize = 64;
const DASH: &str = "\u{2014} ";

/// A key's role, its first byte in a verifier key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyType {
    /// `0x01`: a log's Ed25519 signature over the note text.
    Ed25519,
    /// `0x04`: an Ed25519 cosignature (tlog-cosignature v1).
    Cosignature,
}

impl KeyType {
    fn byte(self) -> u8 {
        match self {
            KeyType::Ed25519 => 0x01,
            KeyType::Cosignature => 0x04,
        }
    }

    fn from_byte(b: u8) -> Option<Self> {
        match b {
            0x01 => Some(KeyType::Ed25519),
            0x04 => Some(KeyType::Cosignature),
            _ => None,
        }
    }

    /// Length of the signature part of a line (after the key ID).
    fn signature_len(self) -> usize {
        match self {
            KeyType::Ed25519 => 64,
            KeyType::Cosignature => 8 + 64,
        }
    }
}

/// Why a note, key or line is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoteError {
    /// Too large, not UTF-8, a forbidden character, no signature block…
    #[error("malformed note: {0}")]
    Malformed(&'static str),
    /// A key name with whitespace or `+`, or empty.
    #[error("invalid key name")]
    KeyName,
    /// A verifier or signer key that does not parse.
    #[error("malformed key: {0}")]
    Key(&'static str),
    /// A configured key's signature line fails.
    #[error("the signature of {0} does not verify")]
    BadSignature(String),
    /// A configured key signed twice.
    #[error("{0} signed the note twice")]
    Repeated(String),
    /// No configured log key signed it.
    #[error("no known log key signed the note")]
    Unsigned,
}

fn valid_name(name: &str) -> bool {
    !name.is_empty() && !name.contains('+') && !name.chars().any(char::is_whitespace)
}

/// `H(name ‖ LF ‖ type ‖ public key)[0..4]`.
pub fn key_id(name: &str, ty: KeyType, public: &[u8; 32]) -> u32 {
    key_id_of_type(name, ty.byte(), public)
}

/// `H(name ‖ LF ‖ type ‖ key)[0..4]` for a signature type this module does
/// not verify itself (C2SP signed-note: other algorithms pick their own type
/// byte; `0xff` is followed by an identifying string in `key`).
pub fn key_id_of_type(name: &str, type_byte: u8, key: &[u8]) -> u32 {
    let digest = Sha256::new()
        .chain_update(name.as_bytes())
        .chain_update(b"\n")
        .chain_update([type_byte])
        .chain_update(key)
        .finalize();
    u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]])
}

/// Canonical base64 (standard alphabet, padding, zero trailing bits);
/// `None` for anything else.
pub fn b64decode(text: &str) -> Option<Vec<u8>> {
    STANDARD.decode(text).ok()
}

/// Standard base64 with padding.
pub fn b64encode(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// A verifier key: `<name>+<hex id>+<base64(type ‖ key)>`.
#[derive(Clone, PartialEq, Eq)]
pub struct VerifierKey {
    name: String,
    id: u32,
    ty: KeyType,
    key: VerifyingKey,
}

impl fmt::Debug for VerifierKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VerifierKey({self})")
    }
}

impl fmt::Display for VerifierKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut raw = vec![self.ty.byte()];
        raw.extend_from_slice(self.key.as_bytes());
        write!(f, "{}+{:08x}+{}", self.name, self.id, b64encode(&raw))
    }
}

impl VerifierKey {
    /// A key for `name` of role `ty`.
    pub fn new(name: &str, ty: KeyType, key: VerifyingKey) -> Result<Self, NoteError> {
        if !valid_name(name) {
            return Err(NoteError::KeyName);
        }
        Ok(VerifierKey {
            name: name.to_string(),
            id: key_id(name, ty, key.as_bytes()),
            ty,
            key,
        })
    }

    /// Parses `<name>+<hex id>+<base64>`, checking the key ID.
    pub fn parse(text: &str) -> Result<Self, NoteError> {
        // Names hold no `+`; base64 may.
        let mut parts = text.splitn(3, '+');
        let (Some(name), Some(hex_id), Some(b64)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(NoteError::Key("not name+id+key"));
        };
        if !valid_name(name) {
            return Err(NoteError::KeyName);
        }
        if hex_id.len() != 8 || !hex_id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(NoteError::Key("key ID is not 8 hex digits"));
        }
        let id = u32::from_str_radix(hex_id, 16).map_err(|_| NoteError::Key("key ID"))?;
        let raw = b64decode(b64).ok_or(NoteError::Key("not canonical base64"))?;
        let (&ty, key) = raw.split_first().ok_or(NoteError::Key("empty"))?;
        let ty = KeyType::from_byte(ty).ok_or(NoteError::Key("unsupported key type"))?;
        let key: [u8; 32] = key.try_into().map_err(|_| NoteError::Key("not 32 bytes"))?;
        let key = VerifyingKey::from_bytes(&key).map_err(|_| NoteError::Key("not a point"))?;
        if key_id(name, ty, key.as_bytes()) != id {
            return Err(NoteError::Key("key ID does not match the key"));
        }
        Ok(VerifierKey {
            name: name.to_string(),
            id,
            ty,
            key,
        })
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its key ID.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Its role.
    pub fn key_type(&self) -> KeyType {
        self.ty
    }

    /// The Ed25519 key.
    pub fn key(&self) -> &VerifyingKey {
        &self.key
    }

    /// Whether `line` is this key's and its signature verifies over `text`
    /// (for a cosignature key, over the cosigned message of `text`).
    pub fn verify_line(&self, text: &str, line: &SignatureLine) -> bool {
        if line.name != self.name || line.id != self.id {
            return false;
        }
        if line.signature.len() != self.ty.signature_len() {
            return false;
        }
        match self.ty {
            KeyType::Ed25519 => ed25519(&line.signature)
                .is_some_and(|sig| self.key.verify_strict(text.as_bytes(), &sig).is_ok()),
            KeyType::Cosignature => {
                let mut ts = [0u8; 8];
                ts.copy_from_slice(&line.signature[..8]);
                let time = u64::from_be_bytes(ts);
                time != 0
                    && time < 1 << 63
                    && ed25519(&line.signature[8..]).is_some_and(|sig| {
                        self.key
                            .verify_strict(&crate::cosignature::message(time, text), &sig)
                            .is_ok()
                    })
            }
        }
    }
}

fn ed25519(bytes: &[u8]) -> Option<Ed25519Signature> {
    let bytes: [u8; 64] = bytes.try_into().ok()?;
    Some(Ed25519Signature::from_bytes(&bytes))
}

/// A private key: `PRIVATE+KEY+<name>+<hex id>+<base64(type ‖ seed)>`.
pub struct SignerKey {
    name: String,
    id: u32,
    ty: KeyType,
    key: SigningKey,
}

impl fmt::Debug for SignerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SignerKey({}+{:08x}, <redacted>)", self.name, self.id)
    }
}

impl SignerKey {
    /// A key for `name` of role `ty` from a 32-byte seed.
    pub fn from_seed(name: &str, ty: KeyType, seed: &[u8; 32]) -> Result<Self, NoteError> {
        if !valid_name(name) {
            return Err(NoteError::KeyName);
        }
        let key = SigningKey::from_bytes(seed);
        Ok(SignerKey {
            name: name.to_string(),
            id: key_id(name, ty, key.verifying_key().as_bytes()),
            ty,
            key,
        })
    }

    /// Parses the private key line (trailing whitespace ignored).
    pub fn parse(text: &str) -> Result<Self, NoteError> {
        let rest = text
            .trim_end()
            .strip_prefix("PRIVATE+KEY+")
            .ok_or(NoteError::Key("not PRIVATE+KEY+…"))?;
        let mut parts = rest.splitn(3, '+');
        let (Some(name), Some(hex_id), Some(b64)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(NoteError::Key("not name+id+key"));
        };
        let raw = b64decode(b64).ok_or(NoteError::Key("not canonical base64"))?;
        let (&ty, seed) = raw.split_first().ok_or(NoteError::Key("empty"))?;
        let ty = KeyType::from_byte(ty).ok_or(NoteError::Key("unsupported key type"))?;
        let seed: [u8; 32] = seed
            .try_into()
            .map_err(|_| NoteError::Key("not 32 bytes"))?;
        let key = Self::from_seed(name, ty, &seed)?;
        if format!("{:08x}", key.id) != hex_id.to_ascii_lowercase() {
            return Err(NoteError::Key("key ID does not match the key"));
        }
        Ok(key)
    }

    /// The private key line (a secret: write it 0600, never log it).
    pub fn to_private_line(&self) -> String {
        let mut raw = vec![self.ty.byte()];
        raw.extend_from_slice(self.key.as_bytes());
        format!(
            "PRIVATE+KEY+{}+{:08x}+{}",
            self.name,
            self.id,
            b64encode(&raw)
        )
    }

    /// The Ed25519 key itself, for a service that signs its own
    /// statements with its log key (the keyserver's replies, keyserver.md
    /// §3.8). Keep it as secret as the key line.
    pub fn signing_key(&self) -> &SigningKey {
        &self.key
    }

    /// Its verifier key.
    pub fn verifier(&self) -> VerifierKey {
        VerifierKey {
            name: self.name.clone(),
            id: self.id,
            ty: self.ty,
            key: self.key.verifying_key(),
        }
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its role.
    pub fn key_type(&self) -> KeyType {
        self.ty
    }

    /// A signature line over `text` (for a log key), or a cosignature line
    /// made at `time` (for a cosignature key; `time` is ignored otherwise).
    pub fn sign(&self, text: &str, time: u64) -> SignatureLine {
        let signature = match self.ty {
            KeyType::Ed25519 => self.key.sign(text.as_bytes()).to_bytes().to_vec(),
            KeyType::Cosignature => {
                let mut out = time.to_be_bytes().to_vec();
                let message = crate::cosignature::message(time, text);
                out.extend_from_slice(&self.key.sign(&message).to_bytes());
                out
            }
        };
        SignatureLine {
            name: self.name.clone(),
            id: self.id,
            signature,
        }
    }
}

/// One signature line: `— <name> <base64(id ‖ signature)>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureLine {
    /// Key name.
    pub name: String,
    /// Key ID.
    pub id: u32,
    /// The signature bytes after the key ID.
    pub signature: Vec<u8>,
}

impl SignatureLine {
    /// The line, with its LF.
    pub fn to_line(&self) -> String {
        let mut raw = self.id.to_be_bytes().to_vec();
        raw.extend_from_slice(&self.signature);
        format!("{DASH}{} {}\n", self.name, b64encode(&raw))
    }

    /// For a cosignature: its timestamp.
    pub fn cosignature_time(&self) -> Option<u64> {
        let ts: [u8; 8] = self.signature.get(..8)?.try_into().ok()?;
        Some(u64::from_be_bytes(ts))
    }
}

/// A parsed note: its text and signature lines, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    text: String,
    signatures: Vec<SignatureLine>,
}

impl Note {
    /// A note of `text` (which must end in LF) with no signature yet.
    pub fn new(text: &str) -> Result<Self, NoteError> {
        check_text(text)?;
        if !text.ends_with('\n') {
            return Err(NoteError::Malformed("text does not end in a newline"));
        }
        Ok(Note {
            text: text.to_string(),
            signatures: Vec::new(),
        })
    }

    /// Parses a signed note.
    pub fn parse(bytes: &[u8]) -> Result<Self, NoteError> {
        if bytes.len() > MAX_NOTE {
            return Err(NoteError::Malformed("over 64 KiB"));
        }
        let whole = std::str::from_utf8(bytes).map_err(|_| NoteError::Malformed("not UTF-8"))?;
        check_text(whole)?;
        let split = whole
            .rfind("\n\n")
            .ok_or(NoteError::Malformed("no signature block"))?;
        let text = &whole[..split + 1];
        let block = &whole[split + 2..];
        if !block.ends_with('\n') {
            return Err(NoteError::Malformed("does not end in a newline"));
        }
        let mut signatures = Vec::new();
        for line in block[..block.len() - 1].split('\n') {
            if signatures.len() == MAX_SIGNATURES {
                return Err(NoteError::Malformed("more than 64 signatures"));
            }
            let rest = line.strip_prefix(DASH).ok_or(NoteError::Malformed(
                "signature line does not start with an em dash",
            ))?;
            let (name, b64) = rest
                .split_once(' ')
                .ok_or(NoteError::Malformed("signature line without a signature"))?;
            if !valid_name(name) {
                return Err(NoteError::KeyName);
            }
            let raw =
                b64decode(b64).ok_or(NoteError::Malformed("signature not canonical base64"))?;
            if raw.len() < 5 {
                return Err(NoteError::Malformed("signature too short"));
            }
            signatures.push(SignatureLine {
                name: name.to_string(),
                id: u32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]),
                signature: raw[4..].to_vec(),
            });
        }
        if signatures.is_empty() {
            return Err(NoteError::Malformed("no signature lines"));
        }
        Ok(Note {
            text: text.to_string(),
            signatures,
        })
    }

    /// The signed text (ending in LF).
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Its signature lines.
    pub fn signatures(&self) -> &[SignatureLine] {
        &self.signatures
    }

    /// Adds a signature line (replacing one of the same key).
    pub fn add(&mut self, line: SignatureLine) {
        self.signatures
            .retain(|s| !(s.name == line.name && s.id == line.id));
        self.signatures.push(line);
    }

    /// The serialised note.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = self.text.clone();
        out.push('\n');
        for s in &self.signatures {
            out.push_str(&s.to_line());
        }
        out.into_bytes()
    }

    /// Verifies against `keys` (tlog.md §3.5): lines of unknown keys are
    /// dropped, a known key's line must verify and appear once, and at least
    /// one known `Ed25519` (log) key must have signed. Returns the note with
    /// only verified lines, the log's first, then cosignatures by name.
    pub fn verify(&self, keys: &[VerifierKey]) -> Result<Note, NoteError> {
        let mut kept: Vec<SignatureLine> = Vec::new();
        for line in &self.signatures {
            let Some(key) = keys.iter().find(|k| k.name == line.name && k.id == line.id) else {
                continue;
            };
            if kept.iter().any(|k| k.name == line.name && k.id == line.id) {
                return Err(NoteError::Repeated(line.name.clone()));
            }
            if !key.verify_line(&self.text, line) {
                return Err(NoteError::BadSignature(line.name.clone()));
            }
            kept.push(line.clone());
        }
        let is_log = |line: &SignatureLine| {
            keys.iter()
                .any(|k| k.name == line.name && k.id == line.id && k.ty == KeyType::Ed25519)
        };
        if !kept.iter().any(is_log) {
            return Err(NoteError::Unsigned);
        }
        kept.sort_by(|a, b| (!is_log(a), &a.name).cmp(&(!is_log(b), &b.name)));
        Ok(Note {
            text: self.text.clone(),
            signatures: kept,
        })
    }
}

/// No character below U+0020 but LF.
fn check_text(text: &str) -> Result<(), NoteError> {
    if text.chars().any(|c| c < ' ' && c != '\n') {
        return Err(NoteError::Malformed("control character"));
    }
    Ok(())
}
