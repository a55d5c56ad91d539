//! The wallet: its store, keys and the flows of §4.7.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, Instant};

use bitcoin::bip32::{DerivationPath, Xpriv};
use bitcoin::consensus::encode::serialize;
use bitcoin::{Network, ScriptBuf, Transaction};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use rand::RngCore;
use redb::{Database, TableDefinition};
use secp256k1::{PublicKey, XOnlyPublicKey, SECP256K1};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use statechain_core::address::{Address, Net};
use statechain_core::auth::{self, Op};
use statechain_core::bip340;
use statechain_core::consensus::Consensus;
use statechain_core::cosign::{CoinKey, Opening, OwnerSession};
use statechain_core::leaf::Leaf;
use statechain_core::message::{
    self, backups_from_json, backups_to_json, tx_from_hex, TransferMessage,
};
use statechain_core::owner::OwnerCoin;
use statechain_core::rules::CoinChain;
use statechain_core::scalar::{point, ser33, Scalar};
use statechain_core::se;
use statechain_core::tx;
use statechain_core::verify::{self, ChainFacts, Receiver, ScriptCheck};
use statechain_core::{LeafHash, SeId, StatechainId};
use zeroize::Zeroizing;

use crate::chain::ChainSource;
use crate::http::{ClientTls, SeClient};
use crate::requests;
use crate::ClientError;

const TABLE: TableDefinition<&str, &[u8]> = TableDefinition::new("wallet");
/// How long a receiver waits for its key update to be under a published
/// checkpoint (a few checkpoint intervals).
const FINALITY_WAIT: Duration = Duration::from_secs(30);

/// How old the members' cosignatures on a checkpoint may be for the
/// wallet to accept it (statechain.md §5.5): the SE announces an idle log
/// again every 60 s so its members cosign it anew; cosignatures older than
/// this mean the members stopped vouching for what the SE serves.
pub const COSIGNATURE_MAX_AGE_SECS: u64 = 600;
/// Confirmations a received coin's funding needs (§4.5 step 9).
pub const MIN_CONFIRMATIONS: u32 = 3;

fn storage<E: std::fmt::Display>(e: E) -> ClientError {
    ClientError::Storage(e.to_string())
}

fn log_err(msg: impl Into<String>) -> ClientError {
    ClientError::Log(msg.into())
}

fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    rand::rngs::OsRng.fill_bytes(&mut b);
    b
}

fn random_scalar() -> Scalar {
    loop {
        if let Ok(s) = Scalar::from_bytes(&random()) {
            return s;
        }
    }
}

/// The entries of a `/v1/statechain/{id}` body, each proven under `cp`:
/// (index, leaf bytes) in the order served.
fn proven_entries(
    v: &Value,
    cp: &tlog_core::checkpoint::Checkpoint,
) -> Result<Vec<(u64, Vec<u8>)>, ClientError> {
    let entries = v["entries"]
        .as_array()
        .ok_or_else(|| log_err("no entries"))?;
    let mut out = Vec::with_capacity(entries.len());
    for e in entries {
        let index = e["index"].as_u64().ok_or_else(|| log_err("entry index"))?;
        let leaf =
            hex::decode(e["leaf"].as_str().unwrap_or("")).map_err(|_| log_err("entry leaf"))?;
        let proof: Vec<[u8; 32]> = e["proof"]
            .as_array()
            .ok_or_else(|| log_err("entry newer than the published checkpoint"))?
            .iter()
            .map(|p| {
                p.as_str()
                    .and_then(|s| hex::decode(s).ok())
                    .and_then(|b| b.try_into().ok())
                    .ok_or_else(|| log_err("proof"))
            })
            .collect::<Result<_, _>>()?;
        tlog_core::merkle::verify_inclusion(
            index,
            cp.size,
            &tlog_core::merkle::leaf_hash(&leaf),
            &proof,
            &cp.root,
        )
        .map_err(|e| log_err(format!("entry {index}: {e}")))?;
        out.push((index, leaf));
    }
    Ok(out)
}

/// The wallet's verified view of the SE's log (tlog-core `LogView` bytes).
const LOG_VIEW: &str = "log_view";

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn h<const N: usize>(v: &Value, field: &str) -> Result<[u8; N], ClientError> {
    v[field]
        .as_str()
        .and_then(|s| hex::decode(s).ok())
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| log_err(format!("reply field {field} missing or malformed")))
}

/// Where a coin is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CoinStatus {
    /// Opened; backup 1 not yet signed.
    Deposit,
    /// Held and transferable.
    Active,
    /// Sent to someone else.
    Sent,
    /// Withdrawal signed; `withdraw complete` pending or done.
    Withdrawn,
}

/// A coin as the wallet stores it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoinRecord {
    /// Coin id (hex).
    pub statechain_id: String,
    /// The address index whose keys own it.
    pub index: u32,
    /// The current SE share key (hex).
    pub server_key: String,
    /// The expected amount (sat).
    pub amount: u64,
    /// `Tx0` (hex) once known.
    pub tx0: Option<String>,
    /// Its output index.
    pub vout: u32,
    /// Backup 1's locktime.
    pub h0: u32,
    /// `c`.
    pub interval: u32,
    /// `h_init` of the coin.
    pub h_init: u32,
    /// Backups with openings.
    pub backups: Value,
    /// Newest verified leaf hash.
    pub head: String,
    /// Every `R_s` the coin's log shows (owners refuse a repeat, §2.3).
    pub nonces: Vec<String>,
    /// Status.
    pub status: CoinStatus,
    /// The signed withdrawal (hex).
    pub withdrawal: Option<String>,
}

/// A stored signing session (resumable after a crash).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SessionRecord {
    /// `m`.
    message: String,
    /// Sealed `r_o`.
    nonce_sealed: String,
    /// `b`.
    blinding: String,
    /// `R_s` once received.
    server_nonce: Option<String>,
}

/// A verified receive whose key update may not have been answered yet.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PendingReceive {
    /// The coin as it will be stored (head filled in at completion).
    record: CoinRecord,
    /// The signed `transfer/receiver` request (sealed at rest: it holds t2).
    body: Value,
    /// Transfers in the log before this one.
    transfers_before: u32,
    /// The signature count received.
    count: u32,
    /// Blocks left before the newest backup is valid, at verification.
    blocks_left: u32,
    /// Fewer than 4 intervals left.
    short_lifetime: bool,
}

/// The pinned SE.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Pinned {
    url: String,
    se_id: String,
    vkey: String,
    h_init: u32,
    interval: u32,
    /// The SE's C2SP policy file (its log key, the members' validating
    /// keys, the quorum), pinned with it; empty: the log key alone.
    #[serde(default)]
    policy: String,
    /// The members' read APIs, to cross-check coins with (§6.3).
    #[serde(default)]
    members: Vec<String>,
}

/// What `receive` accepted.
#[derive(Debug, Clone)]
pub struct Received {
    /// The coin.
    pub statechain_id: String,
    /// Its signature count.
    pub count: u32,
    /// Blocks left before the newest backup is valid.
    pub blocks_left: u32,
    /// Fewer than `4c` blocks left.
    pub short_lifetime: bool,
}

/// A statechain wallet.
pub struct Wallet {
    dir: std::path::PathBuf,
    db: Database,
    seed: Zeroizing<[u8; 32]>,
    network: Network,
    se: Option<(SeClient, Pinned)>,
    chain: Box<dyn ChainSource>,
    /// HTTPS settings for the SE and its members.
    tls: ClientTls,
}

fn parse_network(s: &str) -> Result<Network, ClientError> {
    match s {
        "regtest" => Ok(Network::Regtest),
        "signet" => Ok(Network::Signet),
        "testnet4" => Ok(Network::Testnet4),
        "bitcoin" => Ok(Network::Bitcoin),
        other => Err(ClientError::Usage(format!("unknown network {other:?}"))),
    }
}

fn network_name(n: Network) -> &'static str {
    match n {
        Network::Bitcoin => "bitcoin",
        Network::Signet => "signet",
        Network::Testnet4 => "testnet4",
        _ => "regtest",
    }
}

impl Wallet {
    /// Creates a wallet in `dir` (refuses an existing one).
    pub fn create(dir: &Path, network: &str) -> Result<(), ClientError> {
        let network = parse_network(network)?;
        std::fs::create_dir_all(dir).map_err(storage)?;
        let seed: [u8; 32] = random();
        durable_file::create_new(&dir.join("seed"), &seed, 0o600).map_err(|e| {
            ClientError::Usage(format!("{}: {e} (a wallet exists here?)", dir.display()))
        })?;
        let db = Database::create(dir.join("wallet.redb")).map_err(storage)?;
        let w = Wallet {
            dir: dir.to_path_buf(),
            db,
            seed: Zeroizing::new(seed),
            network,
            se: None,
            chain: Box::new(crate::chain::MockChain::new(Default::default())),
            tls: ClientTls::default(),
        };
        w.put(
            "meta",
            json!({"network": network_name(network)})
                .to_string()
                .as_bytes(),
        )
    }

    /// Opens the wallet in `dir` with a chain source.
    pub fn open(dir: &Path, chain: Box<dyn ChainSource>) -> Result<Wallet, ClientError> {
        let seed = durable_file::read(&dir.join("seed"))
            .map_err(storage)?
            .ok_or_else(|| {
                ClientError::Usage(format!(
                    "no wallet in {} (run `wallet create`)",
                    dir.display()
                ))
            })?;
        let seed: [u8; 32] = seed
            .as_slice()
            .try_into()
            .map_err(|_| ClientError::Storage("seed is not 32 bytes".into()))?;
        let db = Database::create(dir.join("wallet.redb")).map_err(storage)?;
        let mut w = Wallet {
            dir: dir.to_path_buf(),
            db,
            seed: Zeroizing::new(seed),
            network: Network::Regtest,
            se: None,
            chain,
            tls: ClientTls::default(),
        };
        let meta: Value =
            serde_json::from_slice(&w.get("meta")?.ok_or_else(|| storage("no meta"))?)
                .map_err(storage)?;
        w.network = parse_network(meta["network"].as_str().unwrap_or("regtest"))?;
        if let Some(p) = w.get("se")? {
            let pinned: Pinned = serde_json::from_slice(&p).map_err(storage)?;
            w.se = Some((SeClient::new(&pinned.url), pinned));
        }
        Ok(w)
    }

    fn get(&self, k: &str) -> Result<Option<Vec<u8>>, ClientError> {
        let txn = self.db.begin_read().map_err(storage)?;
        let t = match txn.open_table(TABLE) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(storage(e)),
        };
        let v = t.get(k).map_err(storage)?.map(|v| v.value().to_vec());
        Ok(v)
    }

    fn put(&self, k: &str, v: &[u8]) -> Result<(), ClientError> {
        let txn = self.db.begin_write().map_err(storage)?;
        txn.open_table(TABLE)
            .map_err(storage)?
            .insert(k, v)
            .map_err(storage)?;
        txn.commit().map_err(storage)
    }

    fn remove(&self, k: &str) -> Result<(), ClientError> {
        let txn = self.db.begin_write().map_err(storage)?;
        txn.open_table(TABLE)
            .map_err(storage)?
            .remove(k)
            .map_err(storage)?;
        txn.commit().map_err(storage)
    }

    fn keys_with_prefix(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, ClientError> {
        let txn = self.db.begin_read().map_err(storage)?;
        let t = match txn.open_table(TABLE) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(storage(e)),
        };
        let mut out = Vec::new();
        for row in t.range(prefix..).map_err(storage)? {
            let (k, v) = row.map_err(storage)?;
            if !k.value().starts_with(prefix) {
                break;
            }
            out.push((k.value().to_string(), v.value().to_vec()));
        }
        Ok(out)
    }

    fn seal_key(&self) -> Zeroizing<[u8; 32]> {
        let mut h = Sha256::new();
        h.update(b"LK/statechain/wallet-seal/v1");
        h.update(&self.seed[..]);
        Zeroizing::new(h.finalize().into())
    }

    fn seal(&self, aad: &str, secret: &[u8]) -> String {
        let key = self.seal_key();
        let nonce: [u8; 12] = random();
        let ct = ChaCha20Poly1305::new(Key::from_slice(key.as_ref()))
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: secret,
                    aad: aad.as_bytes(),
                },
            )
            .expect("short buffer");
        hex::encode([nonce.as_slice(), &ct].concat())
    }

    fn open_sealed(&self, aad: &str, sealed: &str) -> Result<Zeroizing<Vec<u8>>, ClientError> {
        let raw = hex::decode(sealed).map_err(storage)?;
        if raw.len() < 28 {
            return Err(storage("sealed value too short"));
        }
        let key = self.seal_key();
        ChaCha20Poly1305::new(Key::from_slice(key.as_ref()))
            .decrypt(
                Nonce::from_slice(&raw[..12]),
                Payload {
                    msg: &raw[12..],
                    aad: aad.as_bytes(),
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| storage("sealed value does not open"))
    }

    /// The owner share and auth key of address `i`.
    fn keys(&self, i: u32) -> Result<(Scalar, Scalar), ClientError> {
        let master = Xpriv::new_master(self.network, &self.seed[..]).map_err(storage)?;
        let net = if self.network == Network::Bitcoin {
            0
        } else {
            1
        };
        let derive = |leaf: u32| -> Result<Scalar, ClientError> {
            let path = DerivationPath::from_str(&format!("m/1777'/{net}'/{i}'/{leaf}'"))
                .map_err(storage)?;
            let k = master.derive_priv(SECP256K1, &path).map_err(storage)?;
            Ok(Scalar::from_secret_key(k.private_key))
        };
        Ok((derive(0)?, derive(1)?))
    }

    fn net(&self) -> Net {
        if self.network == Network::Bitcoin {
            Net::Bitcoin
        } else {
            Net::Test
        }
    }

    /// The pinned SE's log verifier key.
    pub fn pinned_vkey(&self) -> Option<String> {
        self.se.as_ref().map(|(_, p)| p.vkey.clone())
    }

    /// Uses `tls` for HTTPS to the SE and its members from now on.
    pub fn set_tls(&mut self, tls: ClientTls) {
        if let Some((client, pinned)) = &mut self.se {
            *client = SeClient::with_tls(&pinned.url, &tls);
        }
        self.tls = tls;
    }

    /// Pins the SE at `url` (its `se_id`, log key and lock parameters) at
    /// first contact; later calls must find the same SE.
    pub fn pin(&mut self, url: &str) -> Result<String, ClientError> {
        let client = SeClient::with_tls(url, &self.tls);
        let info = client.get("/v1/info")?.body;
        let vkey = info["log"]["vkey"]
            .as_str()
            .ok_or_else(|| log_err("info without log.vkey"))?
            .to_string();
        let se_id = hex::encode(statechain_core::hash::sha256(vkey.as_bytes()));
        if info["se_id"].as_str() != Some(se_id.as_str()) {
            return Err(log_err("se_id is not SHA-256 of the log's verifier key"));
        }
        if info["network"].as_str() != Some(network_name(self.network)) {
            return Err(ClientError::Usage(format!(
                "the SE runs on {}, this wallet on {}",
                info["network"],
                network_name(self.network)
            )));
        }
        if let Some((_, p)) = &self.se {
            if p.se_id == se_id && p.url != url {
                // The same SE (same log key) at a new address.
                let mut moved = p.clone();
                moved.url = url.to_string();
                self.put(
                    "se",
                    serde_json::to_string(&moved).map_err(storage)?.as_bytes(),
                )?;
                self.se = Some((SeClient::with_tls(url, &self.tls), moved));
                return Ok(se_id);
            }
            if p.se_id != se_id {
                return Err(ClientError::Usage(format!(
                    "this wallet is pinned to SE {}, not {se_id}",
                    p.se_id
                )));
            }
            return Ok(se_id);
        }
        let policy = info["policy_file"].as_str().unwrap_or("").to_string();
        if !policy.is_empty() {
            let parsed = tlog_core::policy::Policy::parse(&policy)
                .map_err(|e| log_err(format!("the SE's policy file: {e}")))?;
            if parsed
                .log_keys()
                .iter()
                .map(|k| k.to_string())
                .ne([vkey.clone()])
            {
                return Err(log_err("the SE's policy file names another log key"));
            }
        }
        let members = info["members"]
            .as_array()
            .map(|ms| {
                ms.iter()
                    .filter_map(|m| m["http"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let pinned = Pinned {
            url: url.to_string(),
            se_id: se_id.clone(),
            vkey,
            policy,
            members,
            h_init: info["lock"]["h_init"].as_u64().unwrap_or(0) as u32,
            interval: info["lock"]["interval"].as_u64().unwrap_or(0) as u32,
        };
        if pinned.interval < 6 && self.network == Network::Bitcoin {
            return Err(ClientError::Usage(
                "the SE's interval is under 6 blocks".into(),
            ));
        }
        self.put(
            "se",
            serde_json::to_string(&pinned).map_err(storage)?.as_bytes(),
        )?;
        self.se = Some((client, pinned));
        Ok(se_id)
    }

    fn se(&self) -> Result<(&SeClient, &Pinned, SeId), ClientError> {
        let (c, p) = self
            .se
            .as_ref()
            .ok_or_else(|| ClientError::Usage("no SE pinned (pass --server)".into()))?;
        let id = hex::decode(&p.se_id)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| storage("se_id"))?;
        Ok((c, p, id))
    }

    /// A fresh receive address.
    pub fn new_address(&self) -> Result<String, ClientError> {
        let i = self
            .get("next_address")?
            .map(|b| u32::from_be_bytes(b.try_into().unwrap_or([0; 4])))
            .unwrap_or(0);
        self.put("next_address", &(i + 1).to_be_bytes())?;
        let (o, a) = self.keys(i)?;
        Ok(Address {
            owner: o.public(),
            auth: bip340::xonly_of(&a),
        }
        .encode(self.net()))
    }

    fn next_index(&self) -> Result<u32, ClientError> {
        let i = self
            .get("next_address")?
            .map(|b| u32::from_be_bytes(b.try_into().unwrap_or([0; 4])))
            .unwrap_or(0);
        self.put("next_address", &(i + 1).to_be_bytes())?;
        Ok(i)
    }

    /// All stored coins.
    pub fn coins(&self) -> Result<Vec<CoinRecord>, ClientError> {
        self.keys_with_prefix("coin/")?
            .into_iter()
            .map(|(_, v)| serde_json::from_slice(&v).map_err(storage))
            .collect()
    }

    /// One coin.
    pub fn coin(&self, id: &str) -> Result<CoinRecord, ClientError> {
        let v = self
            .get(&format!("coin/{id}"))?
            .ok_or_else(|| ClientError::Usage(format!("no coin {id} in this wallet")))?;
        serde_json::from_slice(&v).map_err(storage)
    }

    fn save(&self, c: &CoinRecord) -> Result<(), ClientError> {
        self.put(
            &format!("coin/{}", c.statechain_id),
            serde_json::to_string(c).map_err(storage)?.as_bytes(),
        )
    }

    fn owner_coin(&self, c: &CoinRecord) -> Result<OwnerCoin, ClientError> {
        let (o, a) = self.keys(c.index)?;
        let id: StatechainId = hex::decode(&c.statechain_id)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| storage("id"))?;
        let server_key = point(&hex::decode(&c.server_key).map_err(storage)?)
            .ok_or_else(|| storage("server key"))?;
        let head: LeafHash = hex::decode(&c.head)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| storage("head"))?;
        let mut coin =
            OwnerCoin::deposit(id, o, a, server_key, c.h0, c.interval, head).map_err(storage)?;
        if let Some(t) = &c.tx0 {
            coin.set_funding(tx_from_hex("tx0", t).map_err(storage)?, c.vout)
                .map_err(storage)?;
        }
        coin.backups = backups_from_json(&c.backups).map_err(storage)?;
        Ok(coin)
    }

    fn update_record(&self, c: &mut CoinRecord, coin: &OwnerCoin) {
        c.backups = backups_to_json(&coin.backups);
        c.head = hex::encode(coin.head);
        c.server_key = hex::encode(ser33(&coin.server_key));
    }

    /// `POST /v1/tokens`.
    pub fn token_new(&self) -> Result<Value, ClientError> {
        self.se()?.0.new_token()
    }

    /// `GET /v1/tokens/{id}`.
    pub fn token_status(&self, id: &str) -> Result<Value, ClientError> {
        Ok(self.se()?.0.get(&format!("/v1/tokens/{id}"))?.body)
    }

    /// Opens a coin: returns its id and the deposit address (P2TR of `Q`).
    pub fn deposit_new(
        &self,
        amount: u64,
        token: Option<String>,
    ) -> Result<(String, String), ClientError> {
        if amount < 10_000 {
            return Err(ClientError::Usage(
                "coins under 10 000 sat are refused (§4.1)".into(),
            ));
        }
        let (client, pinned, se_id) = self.se()?;
        let token_id = match token {
            Some(t) => t,
            None => {
                let t = client.new_token()?;
                if t["status"] != "paid" {
                    return Err(ClientError::Usage(format!(
                        "token {} is unpaid; pay it and pass --token",
                        t["token_id"]
                    )));
                }
                t["token_id"].as_str().unwrap_or_default().to_string()
            }
        };
        let token_bytes: [u8; 16] = hex::decode(&token_id)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| ClientError::Usage("bad token id".into()))?;
        let i = self.next_index()?;
        let (o, a) = self.keys(i)?;
        let a_pub = bip340::xonly_of(&a);
        let r = client.post(
            "/v1/deposit/init",
            &requests::deposit(&se_id, &token_bytes, &a, &random()),
        )?;
        let id: StatechainId = h(&r.body, "statechain_id")?;
        let server_key =
            point(&h::<33>(&r.body, "server_pubkey")?).ok_or_else(|| log_err("server_pubkey"))?;
        // Verify the `s` entry: it must open this coin for our key.
        let chain = self.verified_chain(&id, false)?;
        if chain.server_key != server_key || chain.auth_key != a_pub || chain.count != 0 {
            return Err(log_err(
                "the logged open entry does not match the deposit reply",
            ));
        }
        let tip = self.chain.tip_height()?;
        let coin = OwnerCoin::deposit(
            id,
            o,
            a,
            server_key,
            tip + chain.h_init,
            chain.interval,
            chain.head,
        )
        .map_err(|e| ClientError::Usage(e.to_string()))?;
        let addr = bitcoin::Address::from_script(&coin.key.script_pubkey(), self.network)
            .map_err(storage)?;
        let _ = pinned;
        let record = CoinRecord {
            statechain_id: hex::encode(id),
            index: i,
            server_key: hex::encode(ser33(&server_key)),
            amount,
            tx0: None,
            vout: 0,
            h0: coin.h0,
            interval: chain.interval,
            h_init: chain.h_init,
            backups: json!([]),
            head: hex::encode(chain.head),
            nonces: Vec::new(),
            status: CoinStatus::Deposit,
            withdrawal: None,
        };
        self.save(&record)?;
        Ok((record.statechain_id, addr.to_string()))
    }

    /// Co-signs backup 1 against the (unbroadcast) `Tx0`; returns `Tx0`'s
    /// hex to broadcast now that the backup is safe.
    pub fn deposit_sign(&self, id: &str, tx0_hex: &str) -> Result<String, ClientError> {
        let mut rec = self.coin(id)?;
        if rec.status != CoinStatus::Deposit {
            return Err(ClientError::Usage(format!(
                "coin {id} is not awaiting its deposit"
            )));
        }
        let tx0 = tx_from_hex("tx0", tx0_hex).map_err(|e| ClientError::Usage(e.to_string()))?;
        let mut coin = self.owner_coin(&rec)?;
        let script = coin.key.script_pubkey();
        let vout = tx0
            .output
            .iter()
            .position(|o| o.script_pubkey == script && o.value.to_sat() == rec.amount)
            .ok_or_else(|| {
                ClientError::Usage(format!(
                    "Tx0 has no output of {} sat to the deposit address",
                    rec.amount
                ))
            })? as u32;
        coin.set_funding(tx0.clone(), vout)
            .map_err(|e| ClientError::Usage(e.to_string()))?;
        rec.tx0 = Some(tx0_hex.to_string());
        rec.vout = vout;
        self.save(&rec)?;
        let own = coin.owner_share.public();
        let b1 = coin
            .next_backup(&own)
            .map_err(|e| ClientError::Usage(e.to_string()))?;
        self.cosign(&mut rec, &mut coin, b1, true)?;
        rec.status = CoinStatus::Active;
        self.update_record(&mut rec, &coin);
        self.save(&rec)?;
        Ok(tx0_hex.to_string())
    }

    fn auth_json(a: &Scalar, digest: &[u8; 32]) -> Value {
        requests::auth_json(a, digest, &random())
    }

    /// One resumable co-signing session (§2.3). With `backup`, the signed
    /// transaction is kept as the coin's next backup; the signature and
    /// opening are returned either way.
    fn cosign(
        &self,
        rec: &mut CoinRecord,
        coin: &mut OwnerCoin,
        unsigned: Transaction,
        backup: bool,
    ) -> Result<[u8; 64], ClientError> {
        let (client, _, se_id) = self.se()?;
        let id = coin.statechain_id;
        let m = coin
            .sighash(&unsigned)
            .map_err(|e| ClientError::Usage(e.to_string()))?;
        let skey = format!("session/{}", rec.statechain_id);
        // Resume a stored session for the same message, else start one.
        let stored: Option<SessionRecord> = self
            .get(&skey)?
            .and_then(|v| serde_json::from_slice(&v).ok());
        let mut stored = match stored {
            Some(s) if s.message == hex::encode(m) => s,
            _ => {
                let (r_o, b) = (random_scalar(), random_scalar());
                let s = SessionRecord {
                    message: hex::encode(m),
                    nonce_sealed: self.seal(&skey, &r_o.to_bytes()),
                    blinding: hex::encode(b.to_bytes()),
                    server_nonce: None,
                };
                self.put(
                    &skey,
                    serde_json::to_string(&s).map_err(storage)?.as_bytes(),
                )?;
                s
            }
        };
        let r_o =
            Scalar::from_slice(&self.open_sealed(&skey, &stored.nonce_sealed)?).map_err(storage)?;
        let b = Scalar::from_slice(&hex::decode(&stored.blinding).map_err(storage)?)
            .map_err(storage)?;
        let session = OwnerSession::new(r_o, b, m);
        let com = session.commitment();
        let head = coin.head;
        let r = client.post(
            "/v1/sign/first",
            &requests::sign_first(&se_id, &id, &head, &com, &coin.auth_secret, &random()),
        )?;
        let r_s =
            point(&h::<33>(&r.body, "server_nonce")?).ok_or_else(|| log_err("server_nonce"))?;
        if rec.nonces.contains(&hex::encode(ser33(&r_s))) {
            return Err(log_err(
                "the SE reused a server nonce: aborting before revealing a challenge",
            ));
        }
        stored.server_nonce = Some(hex::encode(ser33(&r_s)));
        self.put(
            &skey,
            serde_json::to_string(&stored).map_err(storage)?.as_bytes(),
        )?;
        let ch = session
            .challenge(&coin.key, &r_s)
            .map_err(|e| ClientError::Usage(e.to_string()))?;
        let r = client.post(
            "/v1/sign/second",
            &requests::sign_second(
                &se_id,
                &id,
                &head,
                &r_s,
                &com,
                &ch.c,
                &coin.auth_secret,
                &random(),
            ),
        )?;
        let s_s =
            Scalar::from_bytes(&h(&r.body, "partial_sig")?).map_err(|_| log_err("partial_sig"))?;
        let sig = session
            .finish(
                &coin.key,
                &coin.owner_share,
                &coin.server_key,
                &r_s,
                &ch,
                &s_s,
            )
            .map_err(|e| log_err(format!("co-signature: {e}")))?;
        coin.head = h(&r.body["entry"], "leaf_hash")?;
        rec.nonces.push(hex::encode(ser33(&r_s)));
        if backup {
            coin.push_backup(
                unsigned,
                &sig,
                Opening {
                    owner_nonce: session.nonce_point(),
                    blinding: session.blinding().clone(),
                },
            );
        }
        self.update_record(rec, coin);
        self.save(rec)?;
        self.remove(&skey)?;
        Ok(sig)
    }

    /// statechain.md §6.3: the coin's history as a member holds it must be
    /// the one the SE showed. A member's checkpoint (signed by the log key)
    /// that extends the SE's one (consistency proof from the member) and
    /// proves, below the SE's size, another set of the coin's entries than
    /// the SE's shows the SE hiding (or inventing) entries: refused. A
    /// member that is behind, unreachable, or does not know the coin yet is
    /// skipped; one must confirm within the finality wait.
    fn cross_check(
        &self,
        members: &[String],
        policy: &tlog_core::policy::Policy,
        origin: &str,
        id: &StatechainId,
        se_cp: &tlog_core::checkpoint::Checkpoint,
        se_entries: &[(u64, Vec<u8>)],
    ) -> Result<(), ClientError> {
        if members.is_empty() {
            return Ok(());
        }
        let origin_path = origin
            .split_once('/')
            .map_or(String::new(), |(_, p)| format!("/{p}"));
        let deadline = Instant::now() + FINALITY_WAIT;
        let mut why = String::new();
        loop {
            for url in members {
                let member = SeClient::with_tls(url, &self.tls);
                let v = match member.get(&format!("/v1/statechain/{}", hex::encode(id))) {
                    Ok(r) => r.body,
                    Err(e) => {
                        why = format!("{url}: {e}");
                        continue;
                    }
                };
                let note = v["checkpoint"].as_str().unwrap_or("").as_bytes();
                let checked = policy
                    .verify(note, now())
                    .map_err(|e| format!("{url}: checkpoint: {e}"))
                    .and_then(|m| {
                        if m.checkpoint.size < se_cp.size {
                            return Err(format!(
                                "{url} is behind ({} < {})",
                                m.checkpoint.size, se_cp.size
                            ));
                        }
                        Ok(m.checkpoint)
                    });
                let m_cp = match checked {
                    Ok(cp) => cp,
                    Err(e) => {
                        why = e;
                        continue;
                    }
                };
                let proof = if m_cp.size == se_cp.size {
                    Vec::new()
                } else {
                    let body = member.get_text(&format!(
                        "{origin_path}/{}",
                        tlog_core::entry_sync::consistency_path(se_cp.size, m_cp.size)
                    ))?;
                    tlog_core::entry_sync::proof_lines(body.as_bytes(), 2)
                        .map_err(|e| log_err(format!("{url}: consistency proof: {e}")))?
                };
                if tlog_core::merkle::verify_consistency(
                    se_cp.size,
                    m_cp.size,
                    &se_cp.root,
                    &m_cp.root,
                    &proof,
                )
                .is_err()
                {
                    // Both signed by the log key: the member's copy of a
                    // tree the SE forked, or a bad proof from the member.
                    why = format!("{url}: its checkpoint is not consistent with the SE's");
                    continue;
                }
                let theirs = match proven_entries(&v, &m_cp) {
                    Ok(entries) => entries,
                    Err(e) => {
                        why = format!("{url}: {e}");
                        continue;
                    }
                };
                let below: Vec<(u64, Vec<u8>)> = theirs
                    .into_iter()
                    .filter(|(i, _)| *i < se_cp.size)
                    .collect();
                if below == se_entries {
                    return Ok(());
                }
                let hidden: Vec<u64> = below
                    .iter()
                    .filter(|e| !se_entries.contains(e))
                    .map(|(i, _)| *i)
                    .collect();
                if !hidden.is_empty() {
                    return Err(log_err(format!(
                        "the SE's view of the coin leaves out entries {hidden:?} that member {url} proves are in the log"
                    )));
                }
                why = format!("{url} shows fewer of the coin's entries than the SE proves");
            }
            if Instant::now() >= deadline {
                return Err(log_err(format!(
                    "no member confirmed the SE's view of the coin: {why}"
                )));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Offers the SE's checkpoint `note` to the wallet's persisted view of
    /// its log (tlog.md §8): accepted only under `policy` and with a
    /// consistency proof (fetched from the SE) to or from the checkpoint
    /// accepted before, so the SE cannot show this wallet a history that
    /// forks or rolls back what it showed it earlier. Two inconsistent
    /// checkpoints, both validly signed, are kept as LKEV evidence in
    /// `<wallet>/evidence/` and the SE is refused from then on.
    fn offer_checkpoint(
        &self,
        client: &SeClient,
        policy: &tlog_core::policy::Policy,
        origin: &str,
        note: &[u8],
    ) -> Result<tlog_core::checkpoint::Checkpoint, ClientError> {
        use tlog_core::view::{LogView, ViewError};
        let mut view = match self.get(LOG_VIEW)? {
            Some(bytes) => LogView::restore(policy.clone(), origin, &bytes)
                .map_err(|e| storage(format!("the saved log view: {e}")))?,
            None => LogView::new(policy.clone(), origin),
        };
        let offered = tlog_core::note::Note::parse(note)
            .ok()
            .and_then(|n| tlog_core::checkpoint::Checkpoint::parse(n.text()).ok())
            .ok_or_else(|| log_err("checkpoint does not parse"))?;
        let proof = match view.needs_proof(offered.size) {
            Some((old, new)) => {
                let path = origin
                    .split_once('/')
                    .map_or(String::new(), |(_, p)| format!("/{p}"));
                let body = client.get_text(&format!(
                    "{path}/{}",
                    tlog_core::entry_sync::consistency_path(old, new)
                ))?;
                tlog_core::entry_sync::proof_lines(body.as_bytes(), 2)
                    .map_err(|e| log_err(format!("consistency proof: {e}")))?
            }
            None => Vec::new(),
        };
        match view.offer(note, &proof, now()) {
            Ok(_) => {
                self.put(LOG_VIEW, &view.to_bytes())?;
                Ok(offered)
            }
            Err(ViewError::Inconsistent(evidence)) => {
                self.put(LOG_VIEW, &view.to_bytes())?;
                let dir = self.dir.join("evidence");
                std::fs::create_dir_all(&dir).map_err(storage)?;
                let file = dir.join(format!(
                    "se-log-{}.lkev",
                    hex::encode(&tlog_core::merkle::leaf_hash(&evidence)[..8])
                ));
                durable_file::replace(&file, &evidence, 0o644).map_err(storage)?;
                Err(log_err(format!(
                    "the SE's log key signed two inconsistent checkpoints: evidence in {} \
                     (statechain-cli verify-evidence); this SE is refused from now on",
                    file.display()
                )))
            }
            Err(e) => Err(log_err(format!("checkpoint: {e}"))),
        }
    }

    /// Polls the SE's published checkpoint (unverified: it only says when
    /// to fetch again, and what is fetched then is verified) until its size
    /// reaches `size` or `deadline` passes.
    fn wait_for_checkpoint(client: &SeClient, origin: &str, size: u64, deadline: Instant) {
        let path = origin
            .split_once('/')
            .map_or(String::new(), |(_, p)| format!("/{p}"));
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
            let published = client
                .get_text(&format!("{path}/checkpoint"))
                .ok()
                .and_then(|t| {
                    let note = tlog_core::note::Note::parse(t.as_bytes()).ok()?;
                    tlog_core::Checkpoint::parse(note.text()).ok()
                })
                .map(|c| c.size);
            if published.is_some_and(|n| n >= size) {
                return;
            }
        }
    }

    /// Fetches the coin's entries and checks them under a checkpoint signed
    /// by the pinned log key (waiting for entries newer than the published
    /// checkpoint when `wait`), then rebuilds its state with the members'
    /// rules and compares the server's convenience fields.
    fn verified_chain(&self, id: &StatechainId, wait: bool) -> Result<CoinChain, ClientError> {
        let (client, pinned, se_id) = self.se()?;
        let vkey = tlog_core::note::VerifierKey::parse(&pinned.vkey)
            .map_err(|e| log_err(e.to_string()))?;
        let policy = if pinned.policy.is_empty() {
            tlog_core::policy::Policy::single(vkey.clone())
        } else {
            tlog_core::policy::Policy::parse(&pinned.policy)
                .map_err(|e| log_err(format!("pinned policy: {e}")))?
                .max_age(COSIGNATURE_MAX_AGE_SECS)
        };
        let deadline = Instant::now() + FINALITY_WAIT;
        loop {
            let v = client
                .get(&format!("/v1/statechain/{}", hex::encode(id)))?
                .body;
            let entries = v["entries"]
                .as_array()
                .ok_or_else(|| log_err("no entries"))?;
            if entries.iter().any(|e| e["proof"].is_null()) {
                if Instant::now() < deadline {
                    // Wait on the checkpoint alone (a few hundred bytes)
                    // until it covers them, then fetch the coin once: the
                    // whole history with proofs is not the SE's work per
                    // poll.
                    let need = entries
                        .iter()
                        .filter(|e| e["proof"].is_null())
                        .filter_map(|e| e["index"].as_u64())
                        .max()
                        .map_or(0, |i| i + 1);
                    Self::wait_for_checkpoint(client, vkey.name(), need, deadline);
                    continue;
                }
                if wait {
                    return Err(log_err("entries stay unpublished"));
                }
            }
            let note_bytes = v["checkpoint"].as_str().unwrap_or("").as_bytes();
            // Under the pinned policy (the log key and a quorum of the
            // members' validating cosignatures, statechain.md §5.5), and
            // consistent with every checkpoint this wallet accepted before.
            let cp = self.offer_checkpoint(client, &policy, vkey.name(), note_bytes)?;
            let proven = proven_entries(&v, &cp)?;
            let mut leaves = Vec::new();
            for (index, leaf) in &proven {
                leaves
                    .push(Leaf::decode(leaf).map_err(|e| log_err(format!("entry {index}: {e}")))?);
            }
            let chain = CoinChain::from_entries(&leaves, &se_id)
                .map_err(|e| log_err(format!("coin chain: {e}")))?;
            if chain.statechain_id != *id
                || v["count"].as_u64() != Some(chain.count as u64)
                || v["head"].as_str() != Some(hex::encode(chain.head).as_str())
                || v["server_pubkey"].as_str()
                    != Some(hex::encode(ser33(&chain.server_key)).as_str())
            {
                return Err(log_err("the server's summary contradicts its own entries"));
            }
            // The member's note needs only the log's signature: the SE's
            // checkpoint passed the quorum, and the consistency proof ties
            // the member's tree to it.
            let log_only = tlog_core::policy::Policy::single(vkey.clone());
            self.cross_check(&pinned.members, &log_only, vkey.name(), id, &cp, &proven)?;
            return Ok(chain);
        }
    }

    /// Sends coin `id` to `to` (a statechain address): returns the count of
    /// backups handed over.
    pub fn send(&self, id: &str, to: &str) -> Result<u32, ClientError> {
        let to = Address::decode(to, self.net()).map_err(|e| ClientError::Usage(e.to_string()))?;
        let mut rec = self.coin(id)?;
        if rec.status != CoinStatus::Active {
            return Err(ClientError::Usage(format!(
                "coin {id} is not active in this wallet"
            )));
        }
        let (client, _, se_id) = self.se()?;
        let mut coin = self.owner_coin(&rec)?;
        let sid = coin.statechain_id;
        let d = auth::digest(
            &se_id,
            Op::TransferSender,
            &sid,
            &coin.head,
            &[&to.auth.serialize()],
        );
        let r = client.post(
            "/v1/transfer/sender",
            &json!({"statechain_id": id, "head": hex::encode(coin.head), "receiver_auth_key": hex::encode(to.auth.serialize()), "auth": Self::auth_json(&coin.auth_secret, &d)}),
        )?;
        let x1 = Scalar::from_bytes(&h(&r.body, "x1")?).map_err(|_| log_err("x1"))?;
        coin.head = h(&r.body["entry"], "leaf_hash")?;
        self.update_record(&mut rec, &coin);
        self.save(&rec)?;
        let unsigned = coin
            .next_backup(&to.owner)
            .map_err(|e| ClientError::Usage(e.to_string()))?;
        self.cosign(&mut rec, &mut coin, unsigned, true)?;
        let msg = coin
            .transfer_message(&se_id, &to, &x1, &random())
            .map_err(storage)?;
        let enc = message::seal(&msg.to_json(), &to.auth, &se_id, &sid, random())
            .map_err(|e| ClientError::Usage(e.to_string()))?;
        let d = auth::digest(
            &se_id,
            Op::TransferMessage,
            &sid,
            &coin.head,
            &[&to.auth.serialize(), &statechain_core::hash::sha256(&enc)],
        );
        client.post(
            "/v1/transfer/message",
            &json!({"statechain_id": id, "head": hex::encode(coin.head), "receiver_auth_key": hex::encode(to.auth.serialize()),
                    "enc": hex::encode(&enc), "auth": Self::auth_json(&coin.auth_secret, &d)}),
        )?;
        rec.status = CoinStatus::Sent;
        self.save(&rec)?;
        Ok(coin.count())
    }

    /// Checks the inbox of every unused address, verifies each message
    /// (§4.5) and completes the key update; returns what was received.
    pub fn receive(&self) -> Result<Vec<Received>, ClientError> {
        let (client, pinned, se_id) = self.se()?;
        let used: Vec<u32> = self.coins()?.iter().map(|c| c.index).collect();
        let n = self
            .get("next_address")?
            .map(|b| u32::from_be_bytes(b.try_into().unwrap_or([0; 4])))
            .unwrap_or(0);
        let mut out = Vec::new();
        // First finish receives whose key update was sent but not answered.
        let mut resumed = Vec::new();
        for (k, sealed) in self.keys_with_prefix("receiving/")? {
            let plain = self.open_sealed(&k, &String::from_utf8_lossy(&sealed))?;
            let p: PendingReceive = serde_json::from_slice(&plain).map_err(storage)?;
            resumed.push(p.record.index);
            out.push(self.complete_receive(client, &k, p)?);
        }
        for i in (0..n).filter(|i| !used.contains(i) && !resumed.contains(i)) {
            let (o, a) = self.keys(i)?;
            let a_pub = bip340::xonly_of(&a);
            let time = now();
            let d = se::inbox_digest(&se_id, time);
            let r = client.post(
                "/v1/transfer/inbox",
                &json!({"receiver_auth_key": hex::encode(a_pub.serialize()), "time": time, "auth": Self::auth_json(&a, &d)}),
            )?;
            // One coin per address: the oldest message (addresses are not
            // reused, §2.8).
            if let Some(m) = r.body["messages"]
                .as_array()
                .and_then(|a| a.first())
                .cloned()
            {
                let id: StatechainId = h(&m, "statechain_id")?;
                let enc =
                    hex::decode(m["enc"].as_str().unwrap_or("")).map_err(|_| log_err("enc"))?;
                let plain = message::open(&enc, &a, &se_id, &id)
                    .map_err(|e| ClientError::Usage(e.to_string()))?;
                let msg = TransferMessage::from_json(&plain)
                    .map_err(|e| ClientError::Usage(e.to_string()))?;
                out.push(self.accept(client, pinned, &se_id, &id, &msg, i, &o, &a)?);
            }
        }
        Ok(out)
    }

    #[allow(clippy::too_many_arguments)]
    fn accept(
        &self,
        client: &SeClient,
        pinned: &Pinned,
        se_id: &SeId,
        id: &StatechainId,
        msg: &TransferMessage,
        index: u32,
        o: &Scalar,
        a: &Scalar,
    ) -> Result<Received, ClientError> {
        let chain = self.verified_chain(id, true)?;
        let txid = msg.tx0.compute_txid();
        let outpoint = bitcoin::OutPoint {
            txid,
            vout: msg.vout,
        };
        let facts = ChainFacts {
            tip_height: self.chain.tip_height()?,
            tx0_confirmations: self.chain.confirmations(&txid)?,
            tx0_unspent: self.chain.is_unspent(&outpoint)?,
        };
        let a_pub: XOnlyPublicKey = bip340::xonly_of(a);
        let v = verify::verify_transfer(
            se_id,
            id,
            msg,
            &chain,
            &Receiver {
                owner_share: o,
                auth_key: a_pub,
            },
            &facts,
            MIN_CONFIRMATIONS,
            &Consensus,
        )?;
        let d = auth::digest(
            se_id,
            Op::TransferReceiver,
            id,
            &v.head,
            &[
                &a_pub.serialize(),
                &ser33(&v.new_server_key),
                &v.count.to_be_bytes(),
            ],
        );
        let body = json!({"statechain_id": hex::encode(id), "head": hex::encode(v.head), "receiver_auth_key": hex::encode(a_pub.serialize()),
                "new_server_pubkey": hex::encode(ser33(&v.new_server_key)), "count": v.count, "t2": hex::encode(v.t2.to_bytes()),
                "auth": Self::auth_json(a, &d)});
        let coin = OwnerCoin::received(msg, &v, o.clone(), a.clone(), chain.interval, v.head);
        let record = CoinRecord {
            statechain_id: hex::encode(id),
            index,
            server_key: hex::encode(ser33(&v.new_server_key)),
            amount: v.funding.output.value.to_sat(),
            tx0: Some(hex::encode(serialize(&msg.tx0))),
            vout: msg.vout,
            h0: coin.h0,
            interval: chain.interval,
            h_init: chain.h_init,
            backups: backups_to_json(&coin.backups),
            head: String::new(),
            nonces: Vec::new(),
            status: CoinStatus::Active,
            withdrawal: None,
        };
        // Persist the verified receive before the key update: if the reply
        // is lost (crash, network), the next `receive` re-sends the same
        // request, which the SE answers from its record (§3.5), instead of
        // finding an empty mailbox and a coin that is ours but unknown here.
        let pending = PendingReceive {
            record,
            body,
            transfers_before: chain.transfers,
            count: v.count,
            blocks_left: v.last_locktime.saturating_sub(facts.tip_height),
            short_lifetime: v.short_lifetime,
        };
        let pkey = format!("receiving/{}", hex::encode(id));
        let sealed = self.seal(
            &pkey,
            serde_json::to_string(&pending).map_err(storage)?.as_bytes(),
        );
        self.put(&pkey, sealed.as_bytes())?;
        let _ = pinned;
        self.complete_receive(client, &pkey, pending)
    }

    /// Sends a persisted key update (again), checks that it is final, and
    /// keeps the coin.
    fn complete_receive(
        &self,
        client: &SeClient,
        pkey: &str,
        mut p: PendingReceive,
    ) -> Result<Received, ClientError> {
        let r = client.post("/v1/transfer/receiver", &p.body)?;
        let t_hash: LeafHash = h(&r.body["entry"], "leaf_hash")?;
        let id: StatechainId = hex::decode(&p.record.statechain_id)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| storage("pending id"))?;
        let (_, a) = self.keys(p.record.index)?;
        // Finality: the key update itself under a signed checkpoint, with
        // the SE's new share key what we computed.
        let after = self.verified_chain(&id, true)?;
        if after.head != t_hash
            || hex::encode(ser33(&after.server_key)) != p.record.server_key
            || after.auth_key != bip340::xonly_of(&a)
            || after.transfers != p.transfers_before + 1
        {
            return Err(log_err(
                "the logged key update is not the one this wallet sent",
            ));
        }
        p.record.head = hex::encode(t_hash);
        p.record.nonces = after
            .sessions
            .iter()
            .map(|s| hex::encode(s.server_nonce))
            .collect();
        self.save(&p.record)?;
        self.remove(pkey)?;
        Ok(Received {
            statechain_id: p.record.statechain_id,
            count: p.count,
            blocks_left: p.blocks_left,
            short_lifetime: p.short_lifetime,
        })
    }

    /// Re-runs the receiver's checks on a held coin's own view (§4.5 minus
    /// the pending-transfer steps): every backup against `Tx0` under
    /// consensus and the log.
    pub fn verify_held(&self, id: &str) -> Result<u32, ClientError> {
        let rec = self.coin(id)?;
        let coin = self.owner_coin(&rec)?;
        let funding = coin
            .funding
            .clone()
            .ok_or_else(|| ClientError::Usage("no funding yet".into()))?;
        let sid = coin.statechain_id;
        let chain = self.verified_chain(&sid, false)?;
        if chain.server_key != coin.server_key {
            return Err(log_err("the log's server key is not this coin's"));
        }
        for (i, b) in coin.backups.iter().enumerate() {
            let lt = tx::backup_locktime(coin.h0, coin.interval, i as u32 + 1)
                .ok_or_else(|| log_err("schedule"))?;
            let payee = (i + 1 == coin.backups.len()).then(|| coin.owner_share.public());
            tx::check_backup(&b.tx, &funding, &coin.key, lt, payee.as_ref()).map_err(|reason| {
                ClientError::Refused(verify::Refusal::Backup {
                    index: i as u32 + 1,
                    reason,
                })
            })?;
            Consensus
                .verify_input(&funding.output, &b.tx, 0)
                .map_err(|reason| {
                    ClientError::Refused(verify::Refusal::Consensus {
                        index: i as u32 + 1,
                        reason,
                    })
                })?;
        }
        Ok(coin.count())
    }

    /// Signs the withdrawal to `to` at `fee_rate` sat/vB; returns its hex.
    pub fn withdraw(&self, id: &str, to: &str, fee_rate: u64) -> Result<String, ClientError> {
        let mut rec = self.coin(id)?;
        if rec.status != CoinStatus::Active {
            return Err(ClientError::Usage(format!(
                "coin {id} is not active in this wallet"
            )));
        }
        let dest = bitcoin::Address::from_str(to)
            .map_err(|e| ClientError::Usage(format!("{to}: {e}")))?
            .require_network(self.network)
            .map_err(|e| ClientError::Usage(format!("{to}: {e}")))?;
        let mut coin = self.owner_coin(&rec)?;
        let funding = coin
            .funding
            .clone()
            .ok_or_else(|| ClientError::Usage("no funding".into()))?;
        let tip = self.chain.tip_height()?;
        let txw = tx::withdrawal_tx(&funding, dest.script_pubkey(), fee_rate, tip)
            .map_err(|e| ClientError::Usage(e.to_string()))?;
        let sig = self.cosign(&mut rec, &mut coin, txw.clone(), false)?;
        let signed = tx::with_signature(txw, 0, &sig);
        Consensus
            .verify_input(&funding.output, &signed, 0)
            .map_err(|e| log_err(format!("withdrawal fails consensus: {e}")))?;
        let hexed = hex::encode(serialize(&signed));
        rec.status = CoinStatus::Withdrawn;
        rec.withdrawal = Some(hexed.clone());
        self.save(&rec)?;
        Ok(hexed)
    }

    /// `withdraw/complete`: the SE erases its share; the coin is closed.
    pub fn withdraw_complete(&self, id: &str) -> Result<(), ClientError> {
        let rec = self.coin(id)?;
        if rec.status != CoinStatus::Withdrawn {
            return Err(ClientError::Usage(format!(
                "coin {id} has no signed withdrawal"
            )));
        }
        let (client, _, se_id) = self.se()?;
        let coin = self.owner_coin(&rec)?;
        let sid = coin.statechain_id;
        let chain = self.verified_chain(&sid, false)?;
        let d = auth::digest(
            &se_id,
            Op::WithdrawComplete,
            &sid,
            &chain.head,
            &[&chain.count.to_be_bytes()],
        );
        client.post(
            "/v1/withdraw/complete",
            &json!({"statechain_id": id, "head": hex::encode(chain.head), "count": chain.count, "auth": Self::auth_json(&coin.auth_secret, &d)}),
        )?;
        Ok(())
    }

    /// The newest backup: hex, locktime, blocks left.
    pub fn backup_show(&self, id: &str) -> Result<(String, u32, i64), ClientError> {
        let rec = self.coin(id)?;
        let coin = self.owner_coin(&rec)?;
        let last = coin
            .backups
            .last()
            .ok_or_else(|| ClientError::Usage("no backup yet".into()))?;
        let lt = last.tx.lock_time.to_consensus_u32();
        let tip = self.chain.tip_height()?;
        Ok((hex::encode(serialize(&last.tx)), lt, lt as i64 - tip as i64))
    }

    /// The newest backup and a CPFP child paying `to` at `fee_rate`.
    pub fn backup_cpfp(
        &self,
        id: &str,
        to: &str,
        fee_rate: u64,
    ) -> Result<(String, String), ClientError> {
        let rec = self.coin(id)?;
        let coin = self.owner_coin(&rec)?;
        let last = coin
            .backups
            .last()
            .ok_or_else(|| ClientError::Usage("no backup yet".into()))?;
        let dest = bitcoin::Address::from_str(to)
            .map_err(|e| ClientError::Usage(format!("{to}: {e}")))?
            .require_network(self.network)
            .map_err(|e| ClientError::Usage(format!("{to}: {e}")))?;
        let child = tx::cpfp_child(
            &last.tx,
            &coin.owner_share,
            dest.script_pubkey(),
            fee_rate,
            &random(),
        )
        .map_err(|e| ClientError::Usage(e.to_string()))?;
        Ok((
            hex::encode(serialize(&last.tx)),
            hex::encode(serialize(&child)),
        ))
    }

    /// The coin key script (for tests building `Tx0`).
    pub fn deposit_script(&self, id: &str) -> Result<ScriptBuf, ClientError> {
        Ok(self.owner_coin(&self.coin(id)?)?.key.script_pubkey())
    }

    /// The wallet's network.
    pub fn network(&self) -> Network {
        self.network
    }

    /// The address's owner key of index `i` (tests).
    pub fn owner_key(&self, i: u32) -> Result<PublicKey, ClientError> {
        Ok(self.keys(i)?.0.public())
    }

    /// The coin's `CoinKey` (tests).
    pub fn coin_key(&self, id: &str) -> Result<CoinKey, ClientError> {
        Ok(self.owner_coin(&self.coin(id)?)?.key)
    }

    /// The wallet directory's seed path (for docs).
    pub fn seed_path(dir: &Path) -> PathBuf {
        dir.join("seed")
    }
}
