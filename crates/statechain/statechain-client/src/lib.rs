//! `statechain-client`: the wallet side of statechain.md (§4.7, §7).
//!
//! A [`Wallet`] is a directory: `seed` (32 bytes, 0600) from which every
//! owner share and auth key is derived (BIP32 `m/1777'/net'/i'/0'` and
//! `…/1'`), and `wallet.redb` with the pinned SE, addresses, coins (funding,
//! every backup with its session opening, head) and pending signing
//! sessions (their nonce sealed under a key derived from the seed). A
//! session is stored before `sign/first` and resumed after a crash: the SE
//! answers the same commitment with the same nonce and the same challenge
//! with the same partial signature, so a retry never burns a second one.
//!
//! Receiving runs every check of §4.5 (`statechain_core::verify`) on the
//! coin's entries proven under a checkpoint signed by the pinned log key,
//! with `bitcoinconsensus` executing every backup, and completes only once
//! the key update is itself under a published checkpoint.

pub mod chain;
pub mod http;
pub mod remote;
pub mod requests;
mod wallet;

pub use wallet::{CoinRecord, CoinStatus, Received, Wallet};

/// What can go wrong for a wallet.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The SE refused (`code` as in §3.6).
    #[error("SE refused ({status} {code}): {message}")]
    Se {
        /// HTTP status.
        status: u16,
        /// Error code.
        code: String,
        /// Message.
        message: String,
        /// The whole error body.
        body: serde_json::Value,
    },
    /// Network or protocol failure talking to the SE.
    #[error("transport: {0}")]
    Transport(String),
    /// The coin failed the receiver's verification (§4.5).
    #[error("coin refused: {0}")]
    Refused(#[from] statechain_core::verify::Refusal),
    /// An evidence file that proves nothing.
    #[error("not evidence of misbehaviour: {0}")]
    NotEvidence(String),
    /// The SE's log or replies do not verify (bad checkpoint signature,
    /// inclusion proof, entry rules, or a reply that contradicts the log).
    #[error("the SE's log does not verify: {0}")]
    Log(String),
    /// The chain source.
    #[error(transparent)]
    Chain(#[from] chain::ChainError),
    /// Wallet storage.
    #[error("wallet storage: {0}")]
    Storage(String),
    /// A caller error (unknown coin, bad address, wrong state).
    #[error("{0}")]
    Usage(String),
}

impl ClientError {
    /// A 409 from the SE.
    pub fn is_conflict(&self) -> bool {
        matches!(self, ClientError::Se { status: 409, .. })
    }
}
