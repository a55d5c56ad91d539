//! Chain facts behind a trait (§4.6). No test here needs a node: `MockChain`
//! keeps the tip, confirmations and spent outpoints in memory or in a JSON
//! file (for CLI tests), and records what it is asked to broadcast.
//! Esplora and bitcoind sources are in [`crate::remote`].

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Mutex;

use bitcoin::consensus::encode::serialize;
use bitcoin::{OutPoint, Transaction, Txid};
use serde::{Deserialize, Serialize};

/// A chain source failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("chain source: {0}")]
pub struct ChainError(pub String);

/// What the wallet needs to know about the chain.
pub trait ChainSource: Send + Sync {
    /// The tip height.
    fn tip_height(&self) -> Result<u32, ChainError>;
    /// Confirmations of `txid` (`None`: unknown; `Some(0)`: mempool).
    fn confirmations(&self, txid: &Txid) -> Result<Option<u32>, ChainError>;
    /// Whether `outpoint` is unspent.
    fn is_unspent(&self, outpoint: &OutPoint) -> Result<bool, ChainError>;
    /// Broadcasts one transaction, or a parent and its child.
    fn broadcast(&self, package: &[Transaction]) -> Result<(), ChainError>;
}

/// The mock chain's state (also its JSON file format).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MockState {
    /// The tip height.
    pub tip: u32,
    /// Confirmed transactions: txid (hex, display order) → block height.
    #[serde(default)]
    pub confirmed: BTreeMap<String, u32>,
    /// Spent outpoints as `txid:vout`.
    #[serde(default)]
    pub spent: BTreeSet<String>,
    /// Broadcast transactions (hex), in order.
    #[serde(default)]
    pub broadcast: Vec<String>,
}

/// An offline chain (§4.6): in memory, or backed by a JSON file that tests
/// edit between CLI invocations.
pub struct MockChain {
    state: Mutex<MockState>,
    file: Option<PathBuf>,
}

impl MockChain {
    /// In memory.
    pub fn new(state: MockState) -> MockChain {
        MockChain {
            state: Mutex::new(state),
            file: None,
        }
    }

    /// Backed by `path` (created with tip 0 if absent); re-read on every call.
    pub fn file(path: PathBuf) -> Result<MockChain, ChainError> {
        let chain = MockChain {
            state: Mutex::new(MockState::default()),
            file: Some(path),
        };
        chain.load()?;
        Ok(chain)
    }

    fn load(&self) -> Result<MockState, ChainError> {
        let mut state = self
            .state
            .lock()
            .map_err(|_| ChainError("poisoned".into()))?;
        if let Some(path) = &self.file {
            match std::fs::read(path) {
                Ok(bytes) => {
                    *state = serde_json::from_slice(&bytes)
                        .map_err(|e| ChainError(format!("{}: {e}", path.display())))?;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(ChainError(format!("{}: {e}", path.display()))),
            }
        }
        Ok(state.clone())
    }

    fn store(&self, state: &MockState) -> Result<(), ChainError> {
        if let Some(path) = &self.file {
            let bytes = serde_json::to_vec_pretty(state).map_err(|e| ChainError(e.to_string()))?;
            durable_file::replace(path, &bytes, 0o644).map_err(|e| ChainError(e.to_string()))?;
        }
        *self
            .state
            .lock()
            .map_err(|_| ChainError("poisoned".into()))? = state.clone();
        Ok(())
    }

    /// Changes the state (tests: mine, confirm, spend).
    pub fn update(&self, f: impl FnOnce(&mut MockState)) -> Result<(), ChainError> {
        let mut s = self.load()?;
        f(&mut s);
        self.store(&s)
    }

    /// The current state.
    pub fn state(&self) -> Result<MockState, ChainError> {
        self.load()
    }
}

impl ChainSource for MockChain {
    fn tip_height(&self) -> Result<u32, ChainError> {
        Ok(self.load()?.tip)
    }

    fn confirmations(&self, txid: &Txid) -> Result<Option<u32>, ChainError> {
        let s = self.load()?;
        Ok(s.confirmed
            .get(&txid.to_string())
            .map(|h| s.tip.saturating_sub(*h) + 1))
    }

    fn is_unspent(&self, outpoint: &OutPoint) -> Result<bool, ChainError> {
        Ok(!self.load()?.spent.contains(&outpoint.to_string()))
    }

    fn broadcast(&self, package: &[Transaction]) -> Result<(), ChainError> {
        let mut s = self.load()?;
        s.broadcast
            .extend(package.iter().map(|t| hex::encode(serialize(t))));
        self.store(&s)
    }
}
