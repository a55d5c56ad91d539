//! The signed checkpoint a verifiable reply carries: a C2SP checkpoint of the
//! namespace's log with Lightkeeper extension lines, signed by the LSS server
//! key itself (BIP340 Schnorr over the note text), so a client already pins
//! everything it needs.
//!
//! ```text
//! lightkeeper.lss/v1/<client id, 66 hex>
//! <log size>
//! <log root, base64>
//! state <keys> <state root, base64>
//! bundle <SHA-256 of the reply's bundle, base64>
//! seen <size> <SHA-256 of the client's last checkpoint note, base64>   (when sent)
//! nonce <the read's nonce, base64>                                       (reads)
//!
//! — lightkeeper.lss/<server id, 66 hex> <base64(key id ‖ 64-byte signature)>
//! ```
//!
//! The key ID follows C2SP signed-note for a non-Ed25519 algorithm:
//! `SHA-256(name ‖ LF ‖ 0xff ‖ "lightkeeper-bip340" ‖ server id)[0..4]`.
//! `seen` is the server signing that it was shown that checkpoint: a later
//! answer smaller than it, or not extending it, is a signed contradiction.

use sha2::{Digest, Sha256};
use tlog_core::checkpoint::Checkpoint;
use tlog_core::note::{b64decode, b64encode, key_id_of_type, Note, SignatureLine};
use tlog_core::Hash;

use lss_core::{ClientId, ServerKey};

/// Prefix of every namespace log's origin.
pub const ORIGIN_PREFIX: &str = "lightkeeper.lss/v1/";
const SIGNATURE_TYPE: u8 = 0xff;
const ALGORITHM: &[u8] = b"lightkeeper-bip340";
const SIGNING_TAG: &[u8] = b"lightkeeper/lss/checkpoint";

/// What the server signs about one namespace at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    /// The namespace.
    pub client: [u8; 33],
    /// Log size.
    pub size: u64,
    /// Log root.
    pub root: Hash,
    /// Keys in the state.
    pub state_count: u64,
    /// State root.
    pub state_root: Hash,
    /// SHA-256 of the bundle sent with it.
    pub bundle: Hash,
    /// The client's last checkpoint, echoed: its size and note hash.
    pub seen: Option<Seen>,
    /// A read's nonce.
    pub nonce: Option<Vec<u8>>,
}

/// A checkpoint a client says it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    /// Its log size.
    pub size: u64,
    /// SHA-256 of its signed note.
    pub note: Hash,
}

/// Why a note is not a valid statement of this server.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StatementError {
    /// Not a signed note, or not a checkpoint.
    #[error("malformed checkpoint note: {0}")]
    Malformed(String),
    /// No valid signature by the server key.
    #[error("not signed by the server key")]
    Signature,
    /// Another namespace's log.
    #[error("the checkpoint is for another namespace")]
    Origin,
}

/// The origin of `client`'s log.
pub fn origin(client: &[u8; 33]) -> String {
    format!("{ORIGIN_PREFIX}{}", hex::encode(client))
}

fn key_name(server_id: &[u8; 33]) -> String {
    format!("lightkeeper.lss/{}", hex::encode(server_id))
}

fn key_id(server_id: &[u8; 33]) -> u32 {
    let mut key = ALGORITHM.to_vec();
    key.extend_from_slice(server_id);
    key_id_of_type(&key_name(server_id), SIGNATURE_TYPE, &key)
}

fn signing_digest(text: &str) -> [u8; 32] {
    let tag = Sha256::digest(SIGNING_TAG);
    Sha256::new()
        .chain_update(tag)
        .chain_update(tag)
        .chain_update(text.as_bytes())
        .finalize()
        .into()
}

/// SHA-256 of a signed note's bytes (what `seen` names).
pub fn note_hash(note: &[u8]) -> Hash {
    Sha256::digest(note).into()
}

impl Statement {
    /// The checkpoint text.
    pub fn to_text(&self) -> String {
        let mut cp = Checkpoint::new(&origin(&self.client), self.size, self.root);
        cp.extensions.push(format!(
            "state {} {}",
            self.state_count,
            b64encode(&self.state_root)
        ));
        cp.extensions
            .push(format!("bundle {}", b64encode(&self.bundle)));
        if let Some(seen) = &self.seen {
            cp.extensions
                .push(format!("seen {} {}", seen.size, b64encode(&seen.note)));
        }
        if let Some(nonce) = &self.nonce {
            cp.extensions.push(format!("nonce {}", b64encode(nonce)));
        }
        cp.to_text()
    }

    /// The signed note, as sent.
    pub fn sign(&self, key: &ServerKey) -> Vec<u8> {
        let text = self.to_text();
        let server_id = key.server_id();
        let signature = key.sign_schnorr(&signing_digest(&text));
        // The text is ours and well formed.
        let mut note = match Note::new(&text) {
            Ok(note) => note,
            Err(e) => unreachable!("checkpoint text is a valid note: {e}"),
        };
        note.add(SignatureLine {
            name: key_name(&server_id),
            id: key_id(&server_id),
            signature: signature.to_vec(),
        });
        note.to_bytes()
    }

    /// Parses `note` and checks it is signed by `server_id`.
    pub fn verify(note: &[u8], server_id: &[u8; 33]) -> Result<Statement, StatementError> {
        let malformed = |e: &dyn std::fmt::Display| StatementError::Malformed(e.to_string());
        let parsed = Note::parse(note).map_err(|e| malformed(&e))?;
        let (name, id) = (key_name(server_id), key_id(server_id));
        let public = secp256k1::PublicKey::from_slice(server_id)
            .map_err(|_| StatementError::Signature)?
            .x_only_public_key()
            .0;
        let msg = secp256k1::Message::from_digest(signing_digest(parsed.text()));
        let signed = parsed.signatures().iter().any(|line| {
            line.name == name
                && line.id == id
                && secp256k1::schnorr::Signature::from_slice(&line.signature).is_ok_and(|sig| {
                    secp256k1::SECP256K1
                        .verify_schnorr(&sig, &msg, &public)
                        .is_ok()
                })
        });
        if !signed {
            return Err(StatementError::Signature);
        }
        Self::parse(parsed.text())
    }

    fn parse(text: &str) -> Result<Statement, StatementError> {
        let bad = |what: &str| StatementError::Malformed(what.to_owned());
        let cp = Checkpoint::parse(text).map_err(|e| StatementError::Malformed(e.to_string()))?;
        let client = cp
            .origin
            .strip_prefix(ORIGIN_PREFIX)
            .and_then(|h| hex::decode(h).ok())
            .and_then(|b| <[u8; 33]>::try_from(b).ok())
            .ok_or(StatementError::Origin)?;
        let hash = |s: &str| -> Result<Hash, StatementError> {
            b64decode(s)
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| bad("a hash is not 32 bytes of base64"))
        };
        let number = |s: &str| {
            tlog_core::checkpoint::parse_decimal(s).ok_or_else(|| bad("a number is not canonical"))
        };
        let mut lines = cp.extensions.iter().map(String::as_str).peekable();
        let state = lines.next().and_then(|l| l.strip_prefix("state "));
        let (count, state_root) = state
            .and_then(|s| s.split_once(' '))
            .ok_or_else(|| bad("no state line"))?;
        let bundle = lines
            .next()
            .and_then(|l| l.strip_prefix("bundle "))
            .ok_or_else(|| bad("no bundle line"))?;
        let mut statement = Statement {
            client,
            size: cp.size,
            root: cp.root,
            state_count: number(count)?,
            state_root: hash(state_root)?,
            bundle: hash(bundle)?,
            seen: None,
            nonce: None,
        };
        if let Some(seen) = lines.peek().and_then(|l| l.strip_prefix("seen ")) {
            let (size, note) = seen.split_once(' ').ok_or_else(|| bad("bad seen line"))?;
            statement.seen = Some(Seen {
                size: number(size)?,
                note: hash(note)?,
            });
            lines.next();
        }
        if let Some(nonce) = lines.peek().and_then(|l| l.strip_prefix("nonce ")) {
            statement.nonce = Some(b64decode(nonce).ok_or_else(|| bad("bad nonce"))?);
            lines.next();
        }
        if lines.next().is_some() {
            return Err(bad("unknown extension line"));
        }
        if statement.to_text() != text {
            return Err(bad("not in canonical form"));
        }
        Ok(statement)
    }
}

/// The namespace a client id names, as the statement spells it.
pub fn client_bytes(client: &ClientId) -> [u8; 33] {
    *client.as_bytes()
}
