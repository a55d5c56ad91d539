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
//!
//! The signature is either 64 bytes, BIP340 over the statement's digest, or
//! a *batch* signature: BIP340 over the root of an RFC 9162 tree of several
//! statements' digests, followed by this one's inclusion proof. A busy
//! server signs every receipt of a group commit with one signature
//! ([`sign_batch`]): a BIP340 signature costs as much CPU as the rest of a
//! logged put, so signing each alone would make the log the server's
//! largest cost. The batch digest has its own tag and commits to the
//! batch's size, and leaves and nodes are domain-separated (RFC 9162), so
//! a batch root is never a statement digest and a proof shows exactly one
//! signed statement.
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
const BATCH_TAG: &[u8] = b"lightkeeper/lss/checkpoint-batch";
/// Statements one batch signature covers at most (a proof of ≤ 10 hashes).
pub const MAX_BATCH: usize = 1024;
const BIP340_LEN: usize = 64;

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

fn tagged(tag: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let tag = Sha256::digest(tag);
    let mut h = Sha256::new().chain_update(tag).chain_update(tag);
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

fn signing_digest(text: &str) -> [u8; 32] {
    tagged(SIGNING_TAG, &[text.as_bytes()])
}

/// What a batch signature signs: its size (u16, big-endian) and root.
fn batch_digest(size: u16, root: &Hash) -> [u8; 32] {
    tagged(BATCH_TAG, &[&size.to_be_bytes(), root])
}

/// Signs the statements whose [`Statement::digest`]s are `digests` with one
/// BIP340 signature (one alone is signed directly). Returns each one's
/// signature, in order, for [`Statement::note`]. At most [`MAX_BATCH`].
pub fn sign_batch(key: &ServerKey, digests: &[Hash]) -> Vec<Vec<u8>> {
    assert!(
        digests.len() <= MAX_BATCH,
        "a batch signs at most {MAX_BATCH} statements"
    );
    if let [one] = digests {
        return vec![key.sign_schnorr(one).to_vec()];
    }
    let mut tree = tlog_core::merkle::MemoryTree::new();
    for d in digests {
        tree.push(d);
    }
    // `digests.len()` ≤ MAX_BATCH < 2^16.
    let size = digests.len() as u16;
    let signature = key.sign_schnorr(&batch_digest(size, &tree.root()));
    (0..size)
        .map(|index| {
            let proof = match tlog_core::merkle::inclusion_proof(
                &tree,
                u64::from(index),
                u64::from(size),
            ) {
                Ok(Ok(proof)) => proof,
                Ok(Err(e)) => unreachable!("index {index} < size {size}: {e}"),
                Err(never) => match never {},
            };
            let mut sig = Vec::with_capacity(BIP340_LEN + 4 + 32 * proof.len());
            sig.extend_from_slice(&signature);
            sig.extend_from_slice(&index.to_be_bytes());
            sig.extend_from_slice(&size.to_be_bytes());
            for h in &proof {
                sig.extend_from_slice(h);
            }
            sig
        })
        .collect()
}

/// Whether `sig` (direct or batch) is `public`'s signature of `digest`.
fn verify_signature(sig: &[u8], digest: &Hash, public: &secp256k1::XOnlyPublicKey) -> bool {
    let (bip340, signed) = if sig.len() == BIP340_LEN {
        (sig, *digest)
    } else {
        // BIP340 ‖ u16 index ‖ u16 size ‖ inclusion proof.
        let Some((bip340, rest)) = sig.split_at_checked(BIP340_LEN) else {
            return false;
        };
        let Some((head, proof)) = rest.split_at_checked(4) else {
            return false;
        };
        let index = u16::from_be_bytes([head[0], head[1]]);
        let size = u16::from_be_bytes([head[2], head[3]]);
        if !(2..=MAX_BATCH as u16).contains(&size) || proof.len() % 32 != 0 {
            return false;
        }
        let proof: Vec<Hash> = proof
            .chunks_exact(32)
            .map(|c| {
                let mut h = [0; 32];
                h.copy_from_slice(c);
                h
            })
            .collect();
        let leaf = tlog_core::merkle::leaf_hash(digest);
        let Ok(root) = tlog_core::merkle::root_from_inclusion(
            u64::from(index),
            u64::from(size),
            &leaf,
            &proof,
        ) else {
            return false;
        };
        (bip340, batch_digest(size, &root))
    };
    let msg = secp256k1::Message::from_digest(signed);
    secp256k1::schnorr::Signature::from_slice(bip340).is_ok_and(|sig| {
        secp256k1::SECP256K1
            .verify_schnorr(&sig, &msg, public)
            .is_ok()
    })
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

    /// What the server key signs (alone, or as a leaf of a batch).
    pub fn digest(&self) -> Hash {
        signing_digest(&self.to_text())
    }

    /// The signed note, as sent.
    pub fn sign(&self, key: &ServerKey) -> Vec<u8> {
        let signature = key.sign_schnorr(&self.digest());
        self.note(&key.server_id(), signature.to_vec())
    }

    /// The note with `signature`, one of [`sign_batch`]'s.
    pub fn note(&self, server_id: &[u8; 33], signature: Vec<u8>) -> Vec<u8> {
        // The text is ours and well formed.
        let mut note = match Note::new(&self.to_text()) {
            Ok(note) => note,
            Err(e) => unreachable!("checkpoint text is a valid note: {e}"),
        };
        note.add(SignatureLine {
            name: key_name(server_id),
            id: key_id(server_id),
            signature,
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
        let digest = signing_digest(parsed.text());
        let signed = parsed.signatures().iter().any(|line| {
            line.name == name
                && line.id == id
                && verify_signature(&line.signature, &digest, &public)
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key() -> ServerKey {
        ServerKey::from_hex(&"22".repeat(32)).expect("key")
    }

    fn statement(size: u64) -> Statement {
        Statement {
            client: [2; 33],
            size,
            root: [size as u8; 32],
            state_count: size,
            state_root: [7; 32],
            bundle: [9; 32],
            seen: None,
            nonce: None,
        }
    }

    /// The signature bytes of a note's only line.
    fn signature_of(note: &[u8]) -> Vec<u8> {
        Note::parse(note).expect("note").signatures()[0]
            .signature
            .clone()
    }

    fn signed_batch(n: u64) -> (Vec<Statement>, Vec<Vec<u8>>) {
        let key = key();
        let statements: Vec<Statement> = (1..=n).map(statement).collect();
        let digests: Vec<Hash> = statements.iter().map(Statement::digest).collect();
        let notes = statements
            .iter()
            .zip(sign_batch(&key, &digests))
            .map(|(s, sig)| s.note(&key.server_id(), sig))
            .collect();
        (statements, notes)
    }

    #[test]
    fn one_statement_alone_is_signed_directly_as_before() {
        let key = key();
        let s = statement(1);
        let sig = sign_batch(&key, &[s.digest()]).remove(0);
        assert_eq!(sig.len(), 64);
        assert_eq!(s.note(&key.server_id(), sig), s.sign(&key));
    }

    proptest! {
        /// Every statement of a batch verifies with its own proof, and no
        /// other statement does with it.
        #[test]
        fn a_batch_signature_shows_exactly_its_statements(n in 2u64..80, pick in any::<prop::sample::Index>()) {
            let server_id = key().server_id();
            let (statements, notes) = signed_batch(n);
            for (s, note) in statements.iter().zip(&notes) {
                prop_assert_eq!(&Statement::verify(note, &server_id).expect("verifies"), s);
            }
            // Statement i's signature line on statement j's text.
            let i = pick.index(notes.len());
            let j = (i + 1) % notes.len();
            let forged = statements[j].note(&server_id, signature_of(&notes[i]));
            prop_assert_eq!(Statement::verify(&forged, &server_id), Err(StatementError::Signature));
        }
    }

    /// What an attacker holding batch signatures could try: move a
    /// statement to another index or size, cut or extend its proof, claim a
    /// batch of one, sign an inner node as a leaf, or present the batch
    /// root's signature as a direct one. All are refused.
    #[test]
    fn altered_batch_signatures_are_refused() {
        let server_id = key().server_id();
        let (statements, notes) = signed_batch(5);
        let s = &statements[2];
        let sig = signature_of(&notes[2]);
        let refused = |sig: Vec<u8>| {
            assert_eq!(
                Statement::verify(&s.note(&server_id, sig), &server_id),
                Err(StatementError::Signature)
            );
        };
        let with = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut altered = sig.clone();
            f(&mut altered);
            altered
        };
        refused(with(&|s| s[65] ^= 1)); // another index
        refused(with(&|s| s[67] = 6)); // another size
        refused(with(&|s| s[67] = 1)); // a "batch" of one
        refused(with(&|s| {
            s[66..68].copy_from_slice(&u16::MAX.to_be_bytes())
        }));
        refused(with(&|s| s.truncate(s.len() - 32))); // a proof cut short
        refused(with(&|s| s.extend_from_slice(&[0; 32]))); // or extended
        refused(with(&|s| s.truncate(s.len() - 1))); // not whole hashes
        refused(with(&|s| s.truncate(66))); // no size
        refused(sig[..64].to_vec()); // the root's signature as a direct one
        let last = sig.len() - 1;
        refused(with(&|s| s[last] ^= 1)); // a proof hash altered
        refused(with(&|s| s[0] ^= 1)); // the signature altered
                                       // The genuine one still verifies.
        assert_eq!(
            Statement::verify(&s.note(&server_id, sig.clone()), &server_id).as_ref(),
            Ok(s)
        );
    }

    #[test]
    fn a_batch_signature_does_not_verify_under_another_key() {
        let other = ServerKey::from_hex(&"23".repeat(32))
            .expect("key")
            .server_id();
        let (statements, notes) = signed_batch(3);
        let server_id = key().server_id();
        // Same key name and id as the other server's would carry.
        let note = statements[0].note(&other, signature_of(&notes[0]));
        assert_eq!(
            Statement::verify(&note, &other),
            Err(StatementError::Signature)
        );
        assert!(Statement::verify(&notes[0], &server_id).is_ok());
    }
}
