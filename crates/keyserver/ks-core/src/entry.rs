//! The hash-chain entry and its derivations (keyserver.md §3.4).
//!
//! An entry hides which identity it belongs to from anyone who does not
//! already know the name (HashID is salted by a per-entry NONCE through
//! CKDF), lets whoever knows the name find and unlock it (IDKEY decrypts
//! CrUID to the UIDHash U), and binds the stored UID (UIDIndex =
//! SHA-256(U)). H_n chains every entry to its whole prefix, so one entry
//! names a chain state (LASTENTRY, peer heads) and downloaded chunks can be
//! link-checked before the Merkle root is.

use aes::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use sha2::{Digest, Sha256, Sha512};

/// Bytes in an entry.
pub const ENTRY_LEN: usize = 153;
/// Bytes in a leaf of the log: `"LKKS"`, version 1, the entry.
pub const LEAF_LEN: usize = 5 + ENTRY_LEN;
/// The service tag that starts every leaf (tlog.md §0).
pub const LEAF_TAG: &[u8; 4] = b"LKKS";
/// The leaf format version.
pub const LEAF_VERSION: u8 = 1;
/// The only entry TYPE of v1.
pub const TYPE_UID: u8 = 0x01;
/// H_{−1}.
pub const GENESIS_PREV: [u8; 32] = [0; 32];

type Aes256CbcEnc = cbc::Encryptor<aes::Aes256>;
type Aes256CbcDec = cbc::Decryptor<aes::Aes256>;

/// The two keys CKDF derives from an entry's NONCE. They are public: CKDF
/// separates domains and gives no secrecy.
#[derive(Clone)]
pub struct Ckdf {
    /// Salts HashID.
    pub k1: [u8; 64],
    /// Salts IDKEY.
    pub k2: [u8; 64],
}

impl Ckdf {
    /// CKDF(NONCE): HMAC-shaped hashing without a secret.
    pub fn derive(nonce: &[u8; 8]) -> Ckdf {
        let a = Sha512::digest(nonce);
        let doubled = |half: &[u8]| {
            let mut x = [0u8; 64];
            x[..32].copy_from_slice(half);
            x[32..].copy_from_slice(half);
            x
        };
        let a1 = doubled(&a[..32]);
        let a2 = doubled(&a[32..]);
        let pad = |x: &[u8; 64], byte: u8| x.map(|b| b ^ byte);
        let half = |outer: &[u8; 64], inner: &[u8; 64]| -> [u8; 64] {
            let inner = Sha512::digest(pad(inner, 0x36));
            let mut h = Sha512::new();
            h.update(pad(outer, 0x5c));
            h.update(inner);
            h.finalize().into()
        };
        Ckdf {
            k1: half(&a1, &a2),
            k2: half(&a2, &a1),
        }
    }

    /// HashID = SHA-256(k1 ‖ I).
    pub fn hash_id(&self, identity: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.k1);
        h.update(identity.as_bytes());
        h.finalize().into()
    }

    /// IDKEY = SHA-256(k2 ‖ I).
    pub fn id_key(&self, identity: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.k2);
        h.update(identity.as_bytes());
        h.finalize().into()
    }
}

/// The SHA-256 state after absorbing an entry's k1 (one 64-byte block):
/// testing a name against the entry then costs one or two compressions
/// instead of CKDF's five SHA-512 runs (keyserver.md §6.1, §7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Midstate([u32; 8]);

const SHA256_IV: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];

impl Midstate {
    /// The midstate of an entry's NONCE.
    pub fn of(nonce: &[u8; 8]) -> Midstate {
        let k1 = Ckdf::derive(nonce).k1;
        let mut state = SHA256_IV;
        sha2::compress256(&mut state, &[k1.into()]);
        Midstate(state)
    }

    /// HashID = SHA-256(k1 ‖ identity), finished from the midstate.
    pub fn hash_id(&self, identity: &str) -> [u8; 32] {
        self.hash_id_of(&Name::new(identity))
    }

    /// HashID of a name whose padded blocks are already made (a scan
    /// makes them once and tests every entry with them).
    pub fn hash_id_of(&self, name: &Name) -> [u8; 32] {
        let mut state = self.0;
        for block in &name.blocks {
            sha2::compress256(&mut state, &[(*block).into()]);
        }
        let mut out = [0u8; 32];
        for (o, w) in out.chunks_exact_mut(4).zip(state) {
            o.copy_from_slice(&w.to_be_bytes());
        }
        out
    }

    /// Whether the entry with this midstate belongs to `name`.
    pub fn matches(&self, entry: &Entry, name: &Name) -> bool {
        &self.hash_id_of(name) == entry.hash_id()
    }
}

/// A name's SHA-256 input after k1: the identity, the padding and the
/// length, in 64-byte blocks (one block for names up to 55 bytes).
#[derive(Clone, Debug)]
pub struct Name {
    blocks: Vec<[u8; 64]>,
}

impl Name {
    /// The blocks of `identity` (mapped).
    pub fn new(identity: &str) -> Name {
        let msg = identity.as_bytes();
        let total_bits = ((64 + msg.len()) as u64) * 8;
        let mut tail = Vec::with_capacity(msg.len() + 72);
        tail.extend_from_slice(msg);
        tail.push(0x80);
        while tail.len() % 64 != 56 {
            tail.push(0);
        }
        tail.extend_from_slice(&total_bits.to_be_bytes());
        Name {
            blocks: tail
                .chunks_exact(64)
                .map(|b| b.try_into().expect("64 bytes"))
                .collect(),
        }
    }
}

/// UIDIndex = SHA-256(U).
pub fn uid_index(uid_hash: &[u8; 32]) -> [u8; 32] {
    Sha256::digest(uid_hash).into()
}

/// One 153-byte hash-chain entry.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Entry(pub [u8; ENTRY_LEN]);

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Entry(H={})", hex_prefix(self.hash()))
    }
}

fn hex_prefix(b: &[u8]) -> String {
    b.iter().take(8).map(|x| format!("{x:02x}")).collect()
}

/// Why bytes are not a valid entry or leaf.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    /// Not 153 (entry) or 158 (leaf) bytes.
    #[error("an entry is {ENTRY_LEN} bytes and a leaf {LEAF_LEN}; got {0}")]
    Length(usize),
    /// The leaf does not start with `LKKS` and version 1.
    #[error("the leaf lacks the LKKS v1 tag")]
    Tag,
    /// A TYPE other than 0x01.
    #[error("entry TYPE {0:#04x} is reserved")]
    Type(u8),
    /// H_n does not recompute from the fields and H_{n−1}.
    #[error("the entry does not link to its predecessor")]
    Link,
    /// IDKEY does not unlock the entry (wrong identity, or forged).
    #[error("the entry's CrUID does not decrypt to its UIDIndex")]
    Unlock,
}

impl Entry {
    /// Builds entry n for identity `identity` (mapped) with UIDHash `u`,
    /// from the server's random NONCE and IV and H_{n−1}.
    pub fn build(
        identity: &str,
        u: &[u8; 32],
        nonce: &[u8; 8],
        iv: &[u8; 16],
        prev: &[u8; 32],
    ) -> Entry {
        let ckdf = Ckdf::derive(nonce);
        let hash_id = ckdf.hash_id(identity);
        let id_key = ckdf.id_key(identity);
        let mut cr_uid = [0u8; 48];
        cr_uid[..16].copy_from_slice(iv);
        cr_uid[16..].copy_from_slice(u);
        let mut enc = Aes256CbcEnc::new(&id_key.into(), iv.into());
        for block in cr_uid[16..].chunks_exact_mut(16) {
            enc.encrypt_block_mut(block.into());
        }
        let mut e = [0u8; ENTRY_LEN];
        e[32] = TYPE_UID;
        e[33..41].copy_from_slice(nonce);
        e[41..73].copy_from_slice(&hash_id);
        e[73..121].copy_from_slice(&cr_uid);
        e[121..153].copy_from_slice(&uid_index(u));
        let h = link_hash(&e, prev);
        e[..32].copy_from_slice(&h);
        Entry(e)
    }

    /// Parses a bare entry (JSON-RPC), checking only length and TYPE.
    pub fn from_bytes(b: &[u8]) -> Result<Entry, EntryError> {
        let e: [u8; ENTRY_LEN] = b.try_into().map_err(|_| EntryError::Length(b.len()))?;
        if e[32] != TYPE_UID {
            return Err(EntryError::Type(e[32]));
        }
        Ok(Entry(e))
    }

    /// Parses a log leaf: tag, version, length and TYPE.
    pub fn from_leaf(leaf: &[u8]) -> Result<Entry, EntryError> {
        if leaf.len() != LEAF_LEN {
            return Err(EntryError::Length(leaf.len()));
        }
        if &leaf[..4] != LEAF_TAG || leaf[4] != LEAF_VERSION {
            return Err(EntryError::Tag);
        }
        Entry::from_bytes(&leaf[5..])
    }

    /// The log leaf carrying this entry.
    pub fn leaf(&self) -> [u8; LEAF_LEN] {
        let mut l = [0u8; LEAF_LEN];
        l[..4].copy_from_slice(LEAF_TAG);
        l[4] = LEAF_VERSION;
        l[5..].copy_from_slice(&self.0);
        l
    }

    /// The leaf hash in the log's Merkle tree.
    pub fn leaf_hash(&self) -> [u8; 32] {
        tlog_core::merkle::leaf_hash(&self.leaf())
    }

    /// H_n.
    pub fn hash(&self) -> &[u8; 32] {
        self.0[..32].try_into().expect("32 bytes")
    }

    /// NONCE.
    pub fn nonce(&self) -> &[u8; 8] {
        self.0[33..41].try_into().expect("8 bytes")
    }

    /// HashID.
    pub fn hash_id(&self) -> &[u8; 32] {
        self.0[41..73].try_into().expect("32 bytes")
    }

    /// CrUID = IV ‖ AES-256-CBC(IDKEY, IV, U).
    pub fn cr_uid(&self) -> &[u8; 48] {
        self.0[73..121].try_into().expect("48 bytes")
    }

    /// UIDIndex.
    pub fn uid_index(&self) -> &[u8; 32] {
        self.0[121..153].try_into().expect("32 bytes")
    }

    /// Checks that H_n recomputes from the fields and `prev` = H_{n−1}.
    pub fn check_link(&self, prev: &[u8; 32]) -> Result<(), EntryError> {
        if &link_hash(&self.0, prev) == self.hash() {
            Ok(())
        } else {
            Err(EntryError::Link)
        }
    }

    /// Whether this entry belongs to `identity` (mapped).
    pub fn is_for(&self, identity: &str) -> bool {
        &Ckdf::derive(self.nonce()).hash_id(identity) == self.hash_id()
    }

    /// Decrypts CrUID with IDKEY of `identity` and returns U, which must
    /// hash to UIDIndex.
    pub fn unlock(&self, identity: &str) -> Result<[u8; 32], EntryError> {
        let id_key = Ckdf::derive(self.nonce()).id_key(identity);
        let cr = self.cr_uid();
        let iv: [u8; 16] = cr[..16].try_into().expect("16 bytes");
        let mut u = [0u8; 32];
        u.copy_from_slice(&cr[16..]);
        let mut dec = Aes256CbcDec::new(&id_key.into(), &iv.into());
        for block in u.chunks_exact_mut(16) {
            dec.decrypt_block_mut(block.into());
        }
        if &uid_index(&u) == self.uid_index() {
            Ok(u)
        } else {
            Err(EntryError::Unlock)
        }
    }
}

/// H_n = SHA-256(TYPE ‖ NONCE ‖ HashID ‖ CrUID ‖ UIDIndex ‖ H_{n−1}).
fn link_hash(e: &[u8; ENTRY_LEN], prev: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(&e[32..]);
    h.update(prev);
    h.finalize().into()
}
