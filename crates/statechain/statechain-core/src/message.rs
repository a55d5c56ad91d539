//! The transfer message (§2.7): what a sender hands the receiver through the
//! SE's mailbox, encrypted to the receiver's auth key with HPKE (RFC 9180,
//! DHKEM(secp256k1, HKDF-SHA256), HKDF-SHA256, ChaCha20-Poly1305, base mode)
//! so the SE relays it without reading it; and the transfer statement the
//! sender signs with its owner share (the proof of possession, §4.5 step 5).

use bitcoin::consensus::encode::{deserialize, serialize};
use bitcoin::{OutPoint, Transaction};
use bitcoin_hpke::aead::ChaCha20Poly1305;
use bitcoin_hpke::kdf::HkdfSha256;
use bitcoin_hpke::kem::SecpK256HkdfSha256;
use bitcoin_hpke::{Deserializable, Kem, OpModeR, OpModeS, Serializable};
use rand_chacha::rand_core::SeedableRng;
use secp256k1::{PublicKey, XOnlyPublicKey};
use serde::{Deserialize, Serialize};

use crate::cosign::Opening;
use crate::hash::{tagged_hash, TAG_TRANSFER};
use crate::scalar::{lift_x, point, ser33, Scalar};
use crate::{SeId, StatechainId};

/// The HPKE `info` prefix.
pub const INFO_PREFIX: &[u8] = b"LK/statechain/transfer-msg/v1";
/// The largest plaintext a sender may encrypt (1 MiB).
pub const MAX_PLAINTEXT: usize = 1 << 20;
/// `enc`: an uncompressed secp256k1 point.
pub const ENC_LEN: usize = 65;
/// The AEAD tag length.
const TAG_LEN: usize = 16;

/// Why a message could not be sealed, opened or parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    /// Larger than [`MAX_PLAINTEXT`].
    #[error("transfer message too large ({0} bytes, limit 1 MiB)")]
    TooLarge(usize),
    /// Shorter than `enc` and a tag.
    #[error("ciphertext too short")]
    Truncated,
    /// HPKE failed: wrong key, wrong coin or SE (`info`), or tampering.
    #[error("cannot decrypt: not for this key, coin or SE, or altered")]
    Decrypt,
    /// The receiver's auth key is not a valid point.
    #[error("invalid receiver key")]
    Key,
    /// The plaintext is not a version-1 message.
    #[error("malformed transfer message: {0}")]
    Malformed(String),
}

/// One backup with its session opening.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupRecord {
    /// The signed backup `i`.
    pub tx: Transaction,
    /// Its session's opening `(R_o,i, b_i)`.
    pub opening: Opening,
}

/// A decrypted, parsed transfer message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferMessage {
    /// The coin.
    pub statechain_id: StatechainId,
    /// The SE.
    pub se_id: SeId,
    /// The funding transaction.
    pub tx0: Transaction,
    /// The coin's output index in `tx0`.
    pub vout: u32,
    /// `O_K`, the sender's share key.
    pub sender_pubkey: PublicKey,
    /// `t1 = o_K + x1`.
    pub t1: Scalar,
    /// The sender's transfer statement signature under `x(O_K)`.
    pub transfer_sig: [u8; 64],
    /// Backups `1..=K` with their openings.
    pub backups: Vec<BackupRecord>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireBackup {
    tx: String,
    owner_nonce: String,
    blinding: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireMessage {
    version: u32,
    statechain_id: String,
    se_id: String,
    tx0: String,
    vout: u32,
    sender_pubkey: String,
    t1: String,
    transfer_sig: String,
    backups: Vec<WireBackup>,
}

fn hex_array<const N: usize>(field: &str, s: &str) -> Result<[u8; N], MessageError> {
    let v = decode_hex(field, s)?;
    v.try_into()
        .map_err(|_| MessageError::Malformed(format!("{field}: expected {N} bytes")))
}

fn decode_hex(field: &str, s: &str) -> Result<Vec<u8>, MessageError> {
    // Lowercase only (§3.1): one encoding per value.
    if s.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(MessageError::Malformed(format!("{field}: uppercase hex")));
    }
    hex::decode(s).map_err(|_| MessageError::Malformed(format!("{field}: not hex")))
}

fn decode_tx(field: &str, s: &str) -> Result<Transaction, MessageError> {
    let raw = decode_hex(field, s)?;
    let tx: Transaction = deserialize(&raw)
        .map_err(|e| MessageError::Malformed(format!("{field}: not a transaction: {e}")))?;
    // One encoding per transaction: re-serialising must give the same bytes.
    if serialize(&tx) != raw {
        return Err(MessageError::Malformed(format!(
            "{field}: non-canonical encoding"
        )));
    }
    Ok(tx)
}

impl TransferMessage {
    /// The JSON plaintext.
    pub fn to_json(&self) -> Vec<u8> {
        let w = WireMessage {
            version: 1,
            statechain_id: hex::encode(self.statechain_id),
            se_id: hex::encode(self.se_id),
            tx0: hex::encode(serialize(&self.tx0)),
            vout: self.vout,
            sender_pubkey: hex::encode(ser33(&self.sender_pubkey)),
            t1: hex::encode(self.t1.to_bytes()),
            transfer_sig: hex::encode(self.transfer_sig),
            backups: self
                .backups
                .iter()
                .map(|b| WireBackup {
                    tx: hex::encode(serialize(&b.tx)),
                    owner_nonce: hex::encode(ser33(&b.opening.owner_nonce)),
                    blinding: hex::encode(b.opening.blinding.to_bytes()),
                })
                .collect(),
        };
        serde_json::to_vec(&w).expect("plain struct serialises")
    }

    /// Parses the JSON plaintext strictly (unknown fields, other versions,
    /// invalid points or scalars and non-canonical hex are refused).
    pub fn from_json(bytes: &[u8]) -> Result<TransferMessage, MessageError> {
        if bytes.len() > MAX_PLAINTEXT {
            return Err(MessageError::TooLarge(bytes.len()));
        }
        let w: WireMessage =
            serde_json::from_slice(bytes).map_err(|e| MessageError::Malformed(e.to_string()))?;
        if w.version != 1 {
            return Err(MessageError::Malformed(format!("version {}", w.version)));
        }
        let backups = w
            .backups
            .iter()
            .enumerate()
            .map(|(i, b)| decode_backup(i, b))
            .collect::<Result<Vec<_>, MessageError>>()?;
        Ok(TransferMessage {
            statechain_id: hex_array("statechain_id", &w.statechain_id)?,
            se_id: hex_array("se_id", &w.se_id)?,
            tx0: decode_tx("tx0", &w.tx0)?,
            vout: w.vout,
            sender_pubkey: point(&decode_hex("sender_pubkey", &w.sender_pubkey)?)
                .ok_or_else(|| MessageError::Malformed("sender_pubkey: not a point".into()))?,
            t1: Scalar::from_bytes(&hex_array::<32>("t1", &w.t1)?)
                .map_err(|_| MessageError::Malformed("t1: not a scalar".into()))?,
            transfer_sig: hex_array("transfer_sig", &w.transfer_sig)?,
            backups,
        })
    }
}

/// Backups with openings as JSON (the message's `backups` array), for
/// wallets that store them.
pub fn backups_to_json(backups: &[BackupRecord]) -> serde_json::Value {
    serde_json::to_value(
        backups
            .iter()
            .map(|b| WireBackup {
                tx: hex::encode(serialize(&b.tx)),
                owner_nonce: hex::encode(ser33(&b.opening.owner_nonce)),
                blinding: hex::encode(b.opening.blinding.to_bytes()),
            })
            .collect::<Vec<_>>(),
    )
    .expect("plain struct serialises")
}

/// Parses what [`backups_to_json`] wrote.
pub fn backups_from_json(v: &serde_json::Value) -> Result<Vec<BackupRecord>, MessageError> {
    let wire: Vec<WireBackup> =
        serde_json::from_value(v.clone()).map_err(|e| MessageError::Malformed(e.to_string()))?;
    wire.iter()
        .enumerate()
        .map(|(i, b)| decode_backup(i, b))
        .collect()
}

fn decode_backup(i: usize, b: &WireBackup) -> Result<BackupRecord, MessageError> {
    Ok(BackupRecord {
        tx: decode_tx(&format!("backups[{i}].tx"), &b.tx)?,
        opening: Opening {
            owner_nonce: point(&decode_hex("owner_nonce", &b.owner_nonce)?).ok_or_else(|| {
                MessageError::Malformed(format!("backups[{i}].owner_nonce: not a point"))
            })?,
            blinding: Scalar::from_bytes(&hex_array::<32>("blinding", &b.blinding)?).map_err(
                |_| MessageError::Malformed(format!("backups[{i}].blinding: not a scalar")),
            )?,
        },
    })
}

/// Parses a transaction from lowercase hex (one canonical encoding).
pub fn tx_from_hex(field: &str, s: &str) -> Result<Transaction, MessageError> {
    decode_tx(field, s)
}

fn info(se_id: &SeId, statechain_id: &StatechainId) -> Vec<u8> {
    let mut v = INFO_PREFIX.to_vec();
    v.extend_from_slice(se_id);
    v.extend_from_slice(statechain_id);
    v
}

type Suite = SecpK256HkdfSha256;

/// Encrypts `plaintext` to the receiver's auth key; the wire form is
/// `enc (65) ‖ ciphertext`. `seed` is fresh randomness for the ephemeral key.
pub fn seal(
    plaintext: &[u8],
    receiver: &XOnlyPublicKey,
    se_id: &SeId,
    statechain_id: &StatechainId,
    seed: [u8; 32],
) -> Result<Vec<u8>, MessageError> {
    if plaintext.len() > MAX_PLAINTEXT {
        return Err(MessageError::TooLarge(plaintext.len()));
    }
    let pk_bytes = lift_x(receiver).serialize_uncompressed();
    let pk = <Suite as Kem>::PublicKey::from_bytes(&pk_bytes).map_err(|_| MessageError::Key)?;
    let mut rng = rand_chacha::ChaCha20Rng::from_seed(seed);
    let (enc, ct) = bitcoin_hpke::single_shot_seal::<ChaCha20Poly1305, HkdfSha256, Suite, _>(
        &OpModeS::Base,
        &pk,
        &info(se_id, statechain_id),
        plaintext,
        b"",
        &mut rng,
    )
    .map_err(|_| MessageError::Key)?;
    let mut out = enc.to_bytes().to_vec();
    out.extend_from_slice(&ct);
    Ok(out)
}

/// Decrypts a wire message with the auth secret `a` (or `n − a`, whichever
/// has the even-Y public key that `lift_x(A)` names).
pub fn open(
    wire: &[u8],
    a: &Scalar,
    se_id: &SeId,
    statechain_id: &StatechainId,
) -> Result<Vec<u8>, MessageError> {
    if wire.len() < ENC_LEN + TAG_LEN {
        return Err(MessageError::Truncated);
    }
    if wire.len() > ENC_LEN + MAX_PLAINTEXT + TAG_LEN {
        return Err(MessageError::TooLarge(wire.len()));
    }
    let (enc, ct) = wire.split_at(ENC_LEN);
    let enc = <Suite as Kem>::EncappedKey::from_bytes(enc).map_err(|_| MessageError::Decrypt)?;
    let even = if crate::scalar::Sign::of(&a.public()).is_minus() {
        a.neg()
    } else {
        a.clone()
    };
    let mut sk_bytes = even.to_bytes();
    let sk = <Suite as Kem>::PrivateKey::from_bytes(&sk_bytes).map_err(|_| MessageError::Key);
    zeroize::Zeroize::zeroize(&mut sk_bytes);
    bitcoin_hpke::single_shot_open::<ChaCha20Poly1305, HkdfSha256, Suite>(
        &OpModeR::Base,
        &sk?,
        &enc,
        &info(se_id, statechain_id),
        ct,
        b"",
    )
    .map_err(|_| MessageError::Decrypt)
}

/// The transfer statement (§4.5 step 5) the sender signs under `x(O_K)`:
/// `TaggedHash(transfer, se_id ‖ statechain_id ‖ outpoint ‖ ser33(O_next) ‖
/// A_next ‖ K (u32) ‖ ser33(X1))`.
pub fn transfer_statement(
    se_id: &SeId,
    statechain_id: &StatechainId,
    outpoint: &OutPoint,
    next_owner: &PublicKey,
    next_auth: &XOnlyPublicKey,
    k: u32,
    x1_pub: &PublicKey,
) -> [u8; 32] {
    tagged_hash(
        TAG_TRANSFER,
        &[
            se_id,
            statechain_id,
            &serialize(outpoint),
            &ser33(next_owner),
            &next_auth.serialize(),
            &k.to_be_bytes(),
            &ser33(x1_pub),
        ],
    )
}
