//! `statechain-core`: the statechain service's rules and math with no I/O,
//! no clock and no randomness of its own (statechain.md §7.1; style.md).
//!
//! The SE, federation members, wallets and the tests all decide with this
//! crate, so they cannot disagree about what a valid co-signature, key
//! update, log entry or transfer is:
//! - [`scalar`]: scalars mod n and point helpers on `secp256k1` 0.29;
//! - [`cosign`]: blinded two-party Schnorr co-signing for owner and SE (§2.3,
//!   §2.4) and the receiver's session audit;
//! - [`keyupdate`]: the additive key update on transfer (§2.5);
//! - [`auth`]: request authorisation digests and BIP340 signatures (§3.2);
//! - [`leaf`], [`rules`]: the public log's entries and validity rules (§5);
//! - [`alert`]: a member's evidence that the log breaks those rules (§6.1);
//! - [`tx`]: backup, withdrawal and CPFP templates and sighashes (§4);
//! - [`message`]: the HPKE-encrypted transfer message (§2.7);
//! - [`address`]: bech32m statechain addresses (§2.8);
//! - [`verify`]: what a receiver checks before accepting a coin (§4.5);
//! - [`se`]: the SE's coin state machine (§3.4, §3.5), which the daemon
//!   drives and commits.
//!
//! Random values (nonces, blinding factors, HPKE ephemeral keys, BIP340 aux)
//! are parameters; drivers draw them from the OS CSPRNG.

pub mod address;
pub mod alert;
pub mod auth;
pub mod bip340;
#[cfg(feature = "consensus")]
pub mod consensus;
pub mod cosign;
pub mod hash;
pub mod keyupdate;
pub mod leaf;
pub mod message;
pub mod owner;
pub mod rules;
pub mod scalar;
pub mod se;
pub mod tx;
pub mod verify;

/// A coin's identifier (16 random bytes chosen by the SE).
pub type StatechainId = [u8; 16];
/// The SE's identity: SHA-256 of its log's verifier key (§5.5).
pub type SeId = [u8; 32];
/// A leaf hash (RFC 9162), used as a coin chain's `head`/`prev`.
pub type LeafHash = [u8; 32];
