//! Control messages (notes §4.2): what an operator sends a signer, signed by
//! the node key, and what the signer answers.
//!
//! Wire: `msgpack(ControlMessage) ‖ nonce (u64 BE) ‖ signature (65 bytes,
//! see [`crate::signed`])` over everything before the signature. Ours are
//! signed in the [`CONTROL_TAG`](signed::CONTROL_TAG) domain, which no hsmd
//! request can produce a signature in; sphinx-key's (a Lightning Signed
//! Message, which hsmd's `SignMessage` makes for anyone on the node host) are
//! accepted only by a signer configured for sphinx-key compatibility. The
//! msgpack is rmp_serde's "named" form of externally tagged enums (a unit
//! variant is a string, a data variant a one-entry map), as the reference's
//! glyph types. A signer accepts a message only if the node key signed it
//! and its nonce is above the last one it accepted and at most
//! [`NONCE_WINDOW`] above it (`Nonce` itself, a query of the counter, is
//! exempt), so a captured message cannot be replayed.

use secp256k1::{PublicKey, SecretKey};
use serde::{Deserialize, Serialize};

use crate::signed::{self, Domain};

/// How far ahead of the last accepted nonce a message may be.
pub const NONCE_WINDOW: u64 = 20;

/// A request to the signer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControlMessage {
    /// The last accepted nonce.
    Nonce,
    /// Device only.
    ResetWifi,
    /// Device only.
    ResetKeys,
    /// Device only.
    ResetAll,
    /// The payment velocity policy.
    QueryPolicy,
    /// Replace the payment velocity policy.
    UpdatePolicy(Policy),
    /// The payee allowlist.
    QueryAllowlist,
    /// Replace the payee allowlist.
    UpdateAllowlist(Vec<String>),
    /// The velocity state.
    QueryVelocity,
    /// Device only.
    Ota(OtaParams),
    /// Policy, allowlist and velocity at once.
    QueryAll,
}

/// The signer's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControlResponse {
    /// The last accepted nonce.
    Nonce(u64),
    /// Device only.
    ResetWifi,
    /// Device only.
    ResetKeys,
    /// Device only.
    ResetAll,
    /// The policy.
    PolicyCurrent(Policy),
    /// The policy, as now stored.
    PolicyUpdated(Policy),
    /// The allowlist.
    AllowlistCurrent(Vec<String>),
    /// The allowlist, as now stored.
    AllowlistUpdated(Vec<String>),
    /// `(start of the window in seconds, amounts per bucket in msat)`.
    VelocityCurrent(Option<(u64, Vec<u64>)>),
    /// Device only.
    OtaConfirm(OtaParams),
    /// Everything.
    AllCurrent {
        /// The policy.
        policy: Policy,
        /// The allowlist.
        allowlist: Vec<String>,
        /// The velocity state.
        velocity: Option<(u64, Vec<u64>)>,
    },
    /// Refused, and why.
    Error(String),
}

/// Payment velocity policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// Most msat paid out per interval.
    pub msat_per_interval: u64,
    /// The interval.
    pub interval: Interval,
    /// Largest single HTLC in msat (recorded; VLS has no such limit).
    pub htlc_limit_msat: u64,
}

/// Velocity interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Interval {
    /// An hour.
    Hourly,
    /// A day.
    Daily,
}

/// Firmware update parameters (devices only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OtaParams {
    /// Version.
    pub version: u64,
    /// Where.
    pub url: String,
    /// Image hash.
    pub sha256_hash: String,
    /// Signature of the hash.
    pub message_sig: String,
}

/// Why a control message is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// Too short to hold a nonce and a signature.
    #[error("control message too short")]
    Short,
    /// Not signed by the node key.
    #[error("control message not signed by the node key")]
    Signature,
    /// The body is not a control message.
    #[error("undecodable control message: {0}")]
    Body(String),
    /// The nonce is outside the window.
    #[error("nonce {nonce} outside ({last}, {last} + {NONCE_WINDOW}]: replayed or out of order")]
    Nonce {
        /// The message's nonce.
        nonce: u64,
        /// The last accepted one.
        last: u64,
    },
}

/// Encodes and signs `message` with `nonce` (Lightkeeper's domain).
pub fn sign(message: &ControlMessage, nonce: u64, node_secret: &SecretKey) -> Vec<u8> {
    sign_in(
        Domain::Tagged(signed::CONTROL_TAG),
        message,
        nonce,
        node_secret,
    )
}

/// Encodes and signs `message` with `nonce` as sphinx-key does (a Lightning
/// Signed Message).
pub fn sign_compat(message: &ControlMessage, nonce: u64, node_secret: &SecretKey) -> Vec<u8> {
    sign_in(Domain::LightningMessage, message, nonce, node_secret)
}

fn sign_in(domain: Domain, message: &ControlMessage, nonce: u64, secret: &SecretKey) -> Vec<u8> {
    let mut bytes = encode(message);
    bytes.extend_from_slice(&nonce.to_be_bytes());
    let signature = signed::sign(domain, &bytes, secret);
    bytes.extend_from_slice(&signature);
    bytes
}

/// Checks the signature against `node` and decodes; the nonce is returned
/// for [`check_nonce`]. With `compat`, a sphinx-key signature (Lightning
/// Signed Message) is accepted too.
pub fn open(
    bytes: &[u8],
    node: &PublicKey,
    compat: bool,
) -> Result<(ControlMessage, u64), ControlError> {
    if bytes.len() < 1 + 8 + signed::LEN {
        return Err(ControlError::Short);
    }
    let (signed_part, signature) = bytes.split_at(bytes.len() - signed::LEN);
    let signature: &[u8; signed::LEN] = signature.try_into().map_err(|_| ControlError::Short)?;
    let by_node = |domain| signed::recover(domain, signed_part, signature).as_ref() == Some(node);
    if !(by_node(Domain::Tagged(signed::CONTROL_TAG))
        || (compat && by_node(Domain::LightningMessage)))
    {
        return Err(ControlError::Signature);
    }
    let (body, nonce) = signed_part.split_at(signed_part.len() - 8);
    let mut n = [0u8; 8];
    n.copy_from_slice(nonce);
    Ok((decode_message(body)?, u64::from_be_bytes(n)))
}

/// Decodes a control message body, all of it (no trailing bytes).
fn decode_message(body: &[u8]) -> Result<ControlMessage, ControlError> {
    let mut de = rmp_serde::Deserializer::new(std::io::Cursor::new(body));
    let message =
        ControlMessage::deserialize(&mut de).map_err(|e| ControlError::Body(e.to_string()))?;
    if de.position() != body.len() as u64 {
        return Err(ControlError::Body("trailing bytes".into()));
    }
    Ok(message)
}

/// Whether `body` is a control message as [`open`] would accept it: what
/// [`signed::is_reserved_message`] keeps from hsmd's `SignMessage`.
pub(crate) fn decodes_as_message(body: &[u8]) -> bool {
    decode_message(body).is_ok()
}

/// Whether `nonce` may follow `last` for `message`.
pub fn check_nonce(message: &ControlMessage, nonce: u64, last: u64) -> Result<(), ControlError> {
    if *message == ControlMessage::Nonce || (nonce > last && nonce - last <= NONCE_WINDOW) {
        Ok(())
    } else {
        Err(ControlError::Nonce { nonce, last })
    }
}

/// rmp_serde's named encoding.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Invariant: these types always serialise (no maps with non-string keys).
    rmp_serde::to_vec_named(value).unwrap_or_default()
}

/// Decodes a response (or any of these types).
pub fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, ControlError> {
    rmp_serde::from_slice(bytes).map_err(|e| ControlError::Body(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use secp256k1::Secp256k1;

    #[test]
    fn golden_shapes() {
        // A unit variant is a bare string; a data variant a one-entry map;
        // a struct is a map with field names (rmp_serde "named").
        assert_eq!(encode(&ControlMessage::Nonce), b"\xa5Nonce");
        assert_eq!(
            encode(&ControlMessage::UpdateAllowlist(vec!["x".into()])),
            b"\x81\xafUpdateAllowlist\x91\xa1x"
        );
        let policy = Policy {
            msat_per_interval: 1,
            interval: Interval::Daily,
            htlc_limit_msat: 2,
        };
        assert_eq!(
            encode(&ControlResponse::PolicyCurrent(policy)),
            [
                &b"\x81\xadPolicyCurrent\x83\xb1msat_per_interval\x01\xa8interval\xa5daily"[..],
                &b"\xafhtlc_limit_msat\x02"[..]
            ]
            .concat()
        );
    }

    #[test]
    fn only_the_node_key_and_fresh_nonces_pass() {
        let secret = SecretKey::from_slice(&[5; 32]).expect("key");
        let node = secret.public_key(&Secp256k1::new());
        let other = SecretKey::from_slice(&[6; 32])
            .expect("key")
            .public_key(&Secp256k1::new());
        let msg = ControlMessage::UpdateAllowlist(vec!["02ab".into()]);
        let bytes = sign(&msg, 7, &secret);
        assert_eq!(open(&bytes, &node, false), Ok((msg.clone(), 7)));
        assert_eq!(open(&bytes, &other, false), Err(ControlError::Signature));
        let mut flipped = bytes.clone();
        flipped[0] ^= 1;
        assert_eq!(open(&flipped, &node, false), Err(ControlError::Signature));
        assert_eq!(open(&bytes[..10], &node, false), Err(ControlError::Short));
        // sphinx-key's form (what SignMessage makes) only with compat.
        let compat = sign_compat(&msg, 7, &secret);
        assert_eq!(open(&compat, &node, false), Err(ControlError::Signature));
        assert_eq!(open(&compat, &node, true), Ok((msg.clone(), 7)));
        check_nonce(&msg, 7, 6).expect("next");
        check_nonce(&msg, 26, 6).expect("edge of the window");
        assert!(check_nonce(&msg, 6, 6).is_err(), "replay");
        assert!(check_nonce(&msg, 27, 6).is_err(), "too far");
        check_nonce(&ControlMessage::Nonce, 0, 6).expect("Nonce is exempt");
    }
}
