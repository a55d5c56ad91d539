//! One entry of a namespace's log: one committed put.

use sha2::{Digest, Sha256};
use tlog_core::wire::{DecodeError, Reader, Writer};
use tlog_core::{leaf_hash, Hash};

use crate::state::StateLeaf;

/// Encoded length of an [`Entry`] without a client signature (with one,
/// 64 bytes more).
pub const ENTRY_LEN: usize = 8 + 32 + 32 + 8 + 32 + 1;

/// A log entry: which put it was and what the namespace held afterwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// Its index in the log.
    pub seq: u64,
    /// The log's root before it (at size `seq`): each entry names its
    /// predecessor, so a history cannot be reordered even entry by entry.
    pub prev_root: Hash,
    /// [`writes_digest`] of the put.
    pub writes: Hash,
    /// Keys in the namespace after the put.
    pub state_count: u64,
    /// The state root after the put.
    pub state_root: Hash,
    /// The client's BIP340 signature of the put ([`put_digest`]), when it
    /// sent one: anyone can check that the client made this write.
    pub client_sig: Option<[u8; 64]>,
}

impl Entry {
    /// `u64 seq ‖ prev_root ‖ writes ‖ u64 state_count ‖ state_root ‖
    /// u8 0|1 ‖ [client signature]`.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        self.write(&mut w);
        w.into_inner()
    }

    pub(crate) fn write(&self, w: &mut Writer) {
        w.u64(self.seq);
        w.hash(&self.prev_root);
        w.hash(&self.writes);
        w.u64(self.state_count);
        w.hash(&self.state_root);
        match &self.client_sig {
            None => w.u8(0),
            Some(sig) => {
                w.u8(1);
                w.bytes(sig);
            }
        }
    }

    /// Parses exactly one entry.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let e = Self::read(&mut r)?;
        r.end()?;
        Ok(e)
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Entry {
            seq: r.u64()?,
            prev_root: r.hash()?,
            writes: r.hash()?,
            state_count: r.u64()?,
            state_root: r.hash()?,
            client_sig: match r.u8()? {
                0 => None,
                1 => Some(r.bytes(64)?.try_into().map_err(|_| DecodeError::TooLong)?),
                _ => return Err(DecodeError::TooLong),
            },
        })
    }

    /// Its leaf hash in the log's Merkle tree.
    pub fn leaf(&self) -> Hash {
        leaf_hash(&self.encode())
    }
}

/// SHA-256 over a domain tag and the leaf hashes of the written entries in
/// key order: binds an entry to exactly the keys, versions and values put.
pub fn writes_digest(written: &[StateLeaf]) -> Hash {
    let mut h = Sha256::new();
    h.update(b"lightkeeper lss writes v1\n");
    for leaf in written {
        h.update(leaf.hash());
    }
    h.finalize().into()
}

/// What a client signs for a put: the BIP340 tagged hash
/// (`"lightkeeper/lss/put"`) of its namespace (client id) and the put's
/// [`writes_digest`]. The versions inside bind it to one place in the
/// namespace's history, so it cannot be replayed elsewhere.
pub fn put_digest(client: &[u8; 33], writes: &Hash) -> [u8; 32] {
    let tag = Sha256::digest(b"lightkeeper/lss/put");
    let mut h = Sha256::new();
    h.update(tag);
    h.update(tag);
    h.update(client);
    h.update(writes);
    h.finalize().into()
}

/// The client's signature of a put of `written` (BIP340, no auxiliary
/// randomness) with the secret key of its client id.
pub fn sign_put(secret: &lss_core::secp256k1::SecretKey, written: &[StateLeaf]) -> [u8; 64] {
    use lss_core::secp256k1::{Keypair, Message, SECP256K1};
    let keypair = Keypair::from_secret_key(SECP256K1, secret);
    let client = keypair.public_key().serialize();
    let digest = put_digest(&client, &writes_digest(written));
    SECP256K1
        .sign_schnorr_no_aux_rand(&Message::from_digest(digest), &keypair)
        .serialize()
}

/// Whether `sig` is `client`'s signature of a put whose writes digest is
/// `writes`.
pub fn verify_put(client: &[u8; 33], writes: &Hash, sig: &[u8; 64]) -> bool {
    use lss_core::secp256k1::{schnorr::Signature, Message, PublicKey, SECP256K1};
    let (Ok(key), Ok(sig)) = (PublicKey::from_slice(client), Signature::from_slice(sig)) else {
        return false;
    };
    let digest = put_digest(client, writes);
    SECP256K1
        .verify_schnorr(
            &sig,
            &Message::from_digest(digest),
            &key.x_only_public_key().0,
        )
        .is_ok()
}

/// The same digest over answer leaves (a prefix read's result).
pub fn answer_digest(answer: &[StateLeaf]) -> Hash {
    answer_digest_of(answer.iter().map(StateLeaf::hash))
}

/// The domain tag of [`answer_digest`].
pub const ANSWER_TAG: &[u8] = b"lightkeeper lss answer v1\n";

/// [`answer_digest`] from the leaf hashes.
pub fn answer_digest_of(hashes: impl IntoIterator<Item = Hash>) -> Hash {
    let mut h = Sha256::new();
    h.update(ANSWER_TAG);
    for hash in hashes {
        h.update(hash);
    }
    h.finalize().into()
}
