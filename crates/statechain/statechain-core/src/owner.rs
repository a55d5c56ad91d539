//! The owner's view of a coin (§4.7): its keys, funding output, the backup
//! chain with each session's opening, and the steps of sending it. The
//! wallet persists an [`OwnerCoin`]; the math lives in [`crate::cosign`],
//! [`crate::tx`] and [`crate::keyupdate`].

use bitcoin::{OutPoint, Transaction};
use secp256k1::{PublicKey, XOnlyPublicKey};

use crate::address::Address;
use crate::bip340;
use crate::cosign::{CoinKey, CosignError, Opening};
use crate::keyupdate;
use crate::message::{transfer_statement, BackupRecord, TransferMessage};
use crate::scalar::{Degenerate, Scalar};
use crate::tx::{self, Funding, TemplateError};
use crate::verify::Verified;
use crate::{LeafHash, SeId, StatechainId};

/// A coin as its current owner holds it.
#[derive(Debug, Clone)]
pub struct OwnerCoin {
    /// The coin.
    pub statechain_id: StatechainId,
    /// `o`.
    pub owner_share: Scalar,
    /// `a`.
    pub auth_secret: Scalar,
    /// The current SE share key `S`.
    pub server_key: PublicKey,
    /// `P`, `Q`.
    pub key: CoinKey,
    /// `Tx0`, once known.
    pub tx0: Option<Transaction>,
    /// `Tx0:vout`, once known.
    pub funding: Option<Funding>,
    /// Backup 1's locktime.
    pub h0: u32,
    /// `c`.
    pub interval: u32,
    /// Backups `1..=K` with openings.
    pub backups: Vec<BackupRecord>,
    /// The newest leaf hash the owner verified.
    pub head: LeafHash,
}

impl OwnerCoin {
    /// A new deposit: the SE returned `S_1`; `P = S_1 + O_1`.
    #[allow(clippy::too_many_arguments)]
    pub fn deposit(
        statechain_id: StatechainId,
        owner_share: Scalar,
        auth_secret: Scalar,
        server_key: PublicKey,
        h0: u32,
        interval: u32,
        head: LeafHash,
    ) -> Result<OwnerCoin, CosignError> {
        let key = CoinKey::from_shares(&server_key, &owner_share.public())?;
        Ok(OwnerCoin {
            statechain_id,
            owner_share,
            auth_secret,
            server_key,
            key,
            tx0: None,
            funding: None,
            h0,
            interval,
            backups: Vec::new(),
            head,
        })
    }

    /// Records `Tx0` (signed, not necessarily broadcast): output `vout` must
    /// pay the coin's key.
    pub fn set_funding(&mut self, tx0: Transaction, vout: u32) -> Result<(), TemplateError> {
        let output = tx0
            .output
            .get(vout as usize)
            .ok_or(TemplateError::Input)?
            .clone();
        if output.script_pubkey != self.key.script_pubkey() {
            return Err(TemplateError::Payee);
        }
        self.funding = Some(Funding {
            outpoint: OutPoint {
                txid: tx0.compute_txid(),
                vout,
            },
            output,
        });
        self.tx0 = Some(tx0);
        Ok(())
    }

    /// `K`, the number of backups held.
    pub fn count(&self) -> u32 {
        self.backups.len() as u32
    }

    /// The unsigned next backup (`K + 1`) paying `payee`.
    pub fn next_backup(&self, payee: &PublicKey) -> Result<Transaction, TemplateError> {
        let funding = self.funding.as_ref().ok_or(TemplateError::Input)?;
        let i = self.count() + 1;
        let locktime =
            tx::backup_locktime(self.h0, self.interval, i).ok_or(TemplateError::Schedule(i))?;
        tx::backup_tx(funding, locktime, payee)
    }

    /// The sighash of an unsigned transaction spending the coin.
    pub fn sighash(&self, tx: &Transaction) -> Result<[u8; 32], TemplateError> {
        let funding = self.funding.as_ref().ok_or(TemplateError::Input)?;
        tx::key_spend_sighash(tx, 0, std::slice::from_ref(&funding.output))
    }

    /// Keeps a co-signed backup and its opening.
    pub fn push_backup(&mut self, unsigned: Transaction, sig: &[u8; 64], opening: Opening) {
        self.backups.push(BackupRecord {
            tx: tx::with_signature(unsigned, 0, sig),
            opening,
        });
    }

    /// The transfer message for `to` after the SE issued `x1` and the last
    /// backup (paying `to.owner`) was co-signed. `aux` is fresh randomness
    /// for the transfer statement's signature.
    pub fn transfer_message(
        &self,
        se_id: &SeId,
        to: &Address,
        x1: &Scalar,
        aux: &[u8; 32],
    ) -> Result<TransferMessage, Degenerate> {
        let funding = self.funding.as_ref().ok_or(Degenerate)?;
        let t1 = keyupdate::sender_t1(&self.owner_share, x1)?;
        let statement = transfer_statement(
            se_id,
            &self.statechain_id,
            &funding.outpoint,
            &to.owner,
            &to.auth,
            self.count(),
            &x1.public(),
        );
        Ok(TransferMessage {
            statechain_id: self.statechain_id,
            se_id: *se_id,
            tx0: self.tx0.clone().ok_or(Degenerate)?,
            vout: funding.outpoint.vout,
            sender_pubkey: self.owner_share.public(),
            t1,
            transfer_sig: bip340::sign(&self.owner_share, &statement, aux),
            backups: self.backups.clone(),
        })
    }

    /// The coin as the receiver holds it after its verified key update
    /// committed (`head`: the `t` entry's leaf hash).
    pub fn received(
        msg: &TransferMessage,
        verified: &Verified,
        owner_share: Scalar,
        auth_secret: Scalar,
        interval: u32,
        head: LeafHash,
    ) -> OwnerCoin {
        OwnerCoin {
            statechain_id: msg.statechain_id,
            owner_share,
            auth_secret,
            server_key: verified.new_server_key,
            key: verified.key.clone(),
            tx0: Some(msg.tx0.clone()),
            funding: Some(verified.funding.clone()),
            h0: msg
                .backups
                .first()
                .map(|b| b.tx.lock_time.to_consensus_u32())
                .unwrap_or(0),
            interval,
            backups: msg.backups.clone(),
            head,
        }
    }

    /// The auth key `A`.
    pub fn auth_key(&self) -> XOnlyPublicKey {
        bip340::xonly_of(&self.auth_secret)
    }
}
