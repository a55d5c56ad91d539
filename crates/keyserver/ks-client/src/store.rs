//! The client's local state (keyserver.md §6.1): one redb file per server,
//! every change one transaction, so a crash leaves the previous verified
//! state or the new one. Private keys are stored in it (the file is
//! created 0600); the escrow key only until `confirm`.

use std::path::Path;

use ks_core::lcj::Lcj;
use ks_core::lcj_record;
use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition};

use crate::ClientError;

/// Settings and the verified head: "pin", "url", "origin", "note",
/// "range", "caps".
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// Position → the 153-byte entry.
const ENTRIES: TableDefinition<u64, &[u8]> = TableDefinition::new("entries");
/// Position → SIGKEY of the keyserver UID there (the key schedule).
const SCHEDULE: TableDefinition<u64, &[u8]> = TableDefinition::new("schedule");
/// Identity → LCJ(OwnRecord): own identities and their private keys.
const OWN: TableDefinition<&str, &[u8]> = TableDefinition::new("own");
/// KEYINITHASH → 1 for one-time KeyInits this client was served.
const SEEN: TableDefinition<&str, u64> = TableDefinition::new("seen_one_time");
/// KEYINITHASH → LCJ(SignedDispersal): the signed receipt of each one-time
/// KeyInit served here, kept as evidence should it be served again.
const ONE_TIME_RECEIPTS: TableDefinition<&str, &[u8]> = TableDefinition::new("one_time_receipts");
/// The token wallet (§5): b64 token → 1. Bearer money: the file is 0600.
const TOKENS: TableDefinition<&str, u64> = TableDefinition::new("tokens");
/// Token requests awaiting the issuer's response: batch id → the issuer
/// key's SPKI and the blinding secrets ([`WalletBatch`]).
const PENDING: TableDefinition<&str, &[u8]> = TableDefinition::new("token_pending");

lcj_record! {
    /// A batch of blinded token requests, as the wallet keeps it until the
    /// issuer's responses arrive.
    pub struct WalletBatch {
        /// When it was made (newest is the default for `finalize`).
        created: u64 = "CREATED",
        /// The issuer key (b64 SPKI) the requests were blinded for.
        key: String = "KEY",
        /// Per request, b64 of `ks_core::token::Pending`.
        pending: Vec<String> = "PENDING",
    }
}

/// One change of the wallet, applied in one transaction.
#[derive(Default)]
pub struct WalletChange<'a> {
    /// Tokens to add.
    pub add: &'a [String],
    /// Tokens to remove (spent).
    pub remove: &'a [String],
    /// A request batch to keep.
    pub put_batch: Option<(&'a str, &'a WalletBatch)>,
    /// A batch whose tokens arrived.
    pub drop_batch: Option<&'a str>,
}

lcj_record! {
    /// One own identity as stored.
    pub struct OwnRecord {
        /// The newest UIDMessage.
        uid: ks_core::uid::UidMessage = "UID",
        /// Its reply.
        reply: ks_core::uid::UidMessageReply = "REPLY",
        /// SIGKEY seed (b64(32)).
        sig_key: String = "SIGKEY",
        /// Escrow seed until confirmed, else "".
        escrow: String = "ESCROW",
        /// X25519 static secret (b64(32)).
        static_secret: String = "STATIC",
        /// Next KeyInit MSGCOUNT.
        next_keyinit: u64 = "NEXTKEYINIT",
        /// `KEYINITHASH b64(secret)` pairs (space-separated: base64 has no
        /// space), sorted.
        pf_secrets: Vec<String> = "PFSECRETS",
    }
}

/// The open state file.
pub struct StateFile {
    db: Database,
}

fn storage(e: impl std::fmt::Display) -> ClientError {
    ClientError::Storage(e.to_string())
}

/// The snapshot a client starts from.
pub struct Loaded {
    /// Settings.
    pub meta: std::collections::BTreeMap<String, Vec<u8>>,
    /// Entries in order.
    pub entries: Vec<[u8; ks_core::entry::ENTRY_LEN]>,
    /// The key schedule.
    pub schedule: Vec<(u64, [u8; 32])>,
    /// One-time KEYINITHASHes seen.
    pub seen: Vec<String>,
    /// Their signed receipts (those served since receipts were kept).
    pub receipts: Vec<(String, ks_core::keyinit::SignedDispersal)>,
    /// The token wallet.
    pub tokens: Vec<String>,
    /// Pending token request batches by id.
    pub batches: Vec<(String, WalletBatch)>,
}

/// What one sync commits.
pub struct Commit<'a> {
    /// First new position.
    pub from: u64,
    /// New entries.
    pub entries: &'a [[u8; ks_core::entry::ENTRY_LEN]],
    /// New schedule rows.
    pub schedule: &'a [(u64, [u8; 32])],
    /// Meta rows to set.
    pub meta: &'a [(&'a str, Vec<u8>)],
}

impl StateFile {
    /// Opens or creates the file (0600).
    pub fn open(path: &Path) -> Result<StateFile, ClientError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(storage)?;
        }
        let existed = path.exists();
        let db = Database::create(path).map_err(storage)?;
        if !existed {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                .map_err(storage)?;
        }
        let txn = db.begin_write().map_err(storage)?;
        txn.open_table(META).map_err(storage)?;
        txn.open_table(ENTRIES).map_err(storage)?;
        txn.open_table(SCHEDULE).map_err(storage)?;
        txn.open_table(OWN).map_err(storage)?;
        txn.open_table(SEEN).map_err(storage)?;
        txn.open_table(TOKENS).map_err(storage)?;
        txn.open_table(PENDING).map_err(storage)?;
        txn.open_table(ONE_TIME_RECEIPTS).map_err(storage)?;
        txn.commit().map_err(storage)?;
        Ok(StateFile { db })
    }

    /// Everything but own identities.
    pub fn load(&self) -> Result<Loaded, ClientError> {
        let txn = self.db.begin_read().map_err(storage)?;
        let mut meta = std::collections::BTreeMap::new();
        for row in txn
            .open_table(META)
            .map_err(storage)?
            .iter()
            .map_err(storage)?
        {
            let (k, v) = row.map_err(storage)?;
            meta.insert(k.value().to_string(), v.value().to_vec());
        }
        let table = txn.open_table(ENTRIES).map_err(storage)?;
        let mut entries = Vec::with_capacity(table.len().map_err(storage)? as usize);
        for (i, row) in table.iter().map_err(storage)?.enumerate() {
            let (k, v) = row.map_err(storage)?;
            if k.value() != i as u64 {
                return Err(storage("the stored chain has a gap"));
            }
            entries.push(
                v.value()
                    .try_into()
                    .map_err(|_| storage("a stored entry is not 153 bytes"))?,
            );
        }
        let mut schedule = Vec::new();
        for row in txn
            .open_table(SCHEDULE)
            .map_err(storage)?
            .iter()
            .map_err(storage)?
        {
            let (k, v) = row.map_err(storage)?;
            schedule.push((
                k.value(),
                v.value().try_into().map_err(|_| storage("bad key"))?,
            ));
        }
        let mut seen = Vec::new();
        for row in txn
            .open_table(SEEN)
            .map_err(storage)?
            .iter()
            .map_err(storage)?
        {
            seen.push(row.map_err(storage)?.0.value().to_string());
        }
        let mut receipts = Vec::new();
        for row in txn
            .open_table(ONE_TIME_RECEIPTS)
            .map_err(storage)?
            .iter()
            .map_err(storage)?
        {
            let (k, v) = row.map_err(storage)?;
            let r = ks_core::keyinit::SignedDispersal::from_lcj(v.value()).map_err(storage)?;
            receipts.push((k.value().to_string(), r));
        }
        let mut tokens = Vec::new();
        for row in txn
            .open_table(TOKENS)
            .map_err(storage)?
            .iter()
            .map_err(storage)?
        {
            tokens.push(row.map_err(storage)?.0.value().to_string());
        }
        let mut batches = Vec::new();
        for row in txn
            .open_table(PENDING)
            .map_err(storage)?
            .iter()
            .map_err(storage)?
        {
            let (k, v) = row.map_err(storage)?;
            let batch = WalletBatch::from_lcj(v.value()).map_err(storage)?;
            batches.push((k.value().to_string(), batch));
        }
        Ok(Loaded {
            meta,
            entries,
            schedule,
            seen,
            receipts,
            tokens,
            batches,
        })
    }

    /// Commits a sync (or settings) in one transaction.
    pub fn commit(&self, c: Commit<'_>) -> Result<(), ClientError> {
        let txn = self.db.begin_write().map_err(storage)?;
        {
            let mut entries = txn.open_table(ENTRIES).map_err(storage)?;
            for (i, e) in c.entries.iter().enumerate() {
                entries.insert(c.from + i as u64, &e[..]).map_err(storage)?;
            }
            let mut schedule = txn.open_table(SCHEDULE).map_err(storage)?;
            for (p, k) in c.schedule {
                schedule.insert(*p, &k[..]).map_err(storage)?;
            }
            let mut meta = txn.open_table(META).map_err(storage)?;
            for (k, v) in c.meta {
                meta.insert(*k, v.as_slice()).map_err(storage)?;
            }
        }
        txn.commit().map_err(storage)
    }

    /// Remembers a one-time KEYINITHASH and its signed receipt.
    pub fn seen(
        &self,
        hash: &str,
        receipt: &ks_core::keyinit::SignedDispersal,
    ) -> Result<(), ClientError> {
        let txn = self.db.begin_write().map_err(storage)?;
        txn.open_table(SEEN)
            .map_err(storage)?
            .insert(hash, 1)
            .map_err(storage)?;
        txn.open_table(ONE_TIME_RECEIPTS)
            .map_err(storage)?
            .insert(hash, &receipt.to_lcj()[..])
            .map_err(storage)?;
        txn.commit().map_err(storage)
    }

    /// Changes the token wallet in one transaction.
    pub fn wallet(&self, c: WalletChange<'_>) -> Result<(), ClientError> {
        let txn = self.db.begin_write().map_err(storage)?;
        {
            let mut tokens = txn.open_table(TOKENS).map_err(storage)?;
            for t in c.add {
                tokens.insert(t.as_str(), 1).map_err(storage)?;
            }
            for t in c.remove {
                tokens.remove(t.as_str()).map_err(storage)?;
            }
            let mut pending = txn.open_table(PENDING).map_err(storage)?;
            if let Some((id, batch)) = c.put_batch {
                pending.insert(id, &batch.to_lcj()[..]).map_err(storage)?;
            }
            if let Some(id) = c.drop_batch {
                pending.remove(id).map_err(storage)?;
            }
        }
        txn.commit().map_err(storage)
    }

    /// Stores an own identity.
    pub fn put_own(&self, record: &OwnRecord) -> Result<(), ClientError> {
        let txn = self.db.begin_write().map_err(storage)?;
        txn.open_table(OWN)
            .map_err(storage)?
            .insert(record.uid.content.identity.as_str(), &record.to_lcj()[..])
            .map_err(storage)?;
        txn.commit().map_err(storage)
    }

    /// An own identity.
    pub fn own(&self, identity: &str) -> Result<Option<OwnRecord>, ClientError> {
        let txn = self.db.begin_read().map_err(storage)?;
        let t = txn.open_table(OWN).map_err(storage)?;
        match t.get(identity).map_err(storage)? {
            None => Ok(None),
            Some(v) => OwnRecord::from_lcj(v.value()).map(Some).map_err(storage),
        }
    }

    /// All own identities.
    pub fn owns(&self) -> Result<Vec<OwnRecord>, ClientError> {
        let txn = self.db.begin_read().map_err(storage)?;
        let mut out = Vec::new();
        for row in txn
            .open_table(OWN)
            .map_err(storage)?
            .iter()
            .map_err(storage)?
        {
            out.push(OwnRecord::from_lcj(row.map_err(storage)?.1.value()).map_err(storage)?);
        }
        Ok(out)
    }
}
