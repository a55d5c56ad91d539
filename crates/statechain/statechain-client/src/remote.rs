//! Chain sources over the network (§4.6): an Esplora REST server
//! (Blockstream's `electrs`, mempool.space) and Bitcoin Core's JSON-RPC.
//! Both answer the four questions of [`ChainSource`]; every reply is
//! parsed strictly and anything unexpected is a [`ChainError`], never a
//! guess (a wallet that misreads "unspent" or a confirmation count could
//! accept a coin it should refuse).
//!
//! Packages (a zero-fee TRUC backup and its CPFP child) need package
//! relay: Esplora's `POST /txs/package` (mempool.space's API) and Core's
//! `submitpackage` (v28+). A single transaction goes to `POST /tx` or
//! `sendrawtransaction`.
//!
//! Neither server can run on the project's test machine, so both are
//! tested against in-process servers that implement the documented subset
//! (`tests/remote_chain.rs`); the request and reply shapes follow the
//! Esplora API documentation and Core's RPC help.

use std::time::Duration;

use bitcoin::consensus::encode::serialize;
use bitcoin::{OutPoint, Transaction, Txid};
use serde_json::{json, Value};

use crate::chain::{ChainError, ChainSource};

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

fn err(what: impl std::fmt::Display) -> ChainError {
    ChainError(what.to_string())
}

/// Largest reply read from a chain source.
const MAX_REPLY: u64 = 4 << 20;

/// A reply's status and body (at most [`MAX_REPLY`] bytes); `what` names
/// the request in errors.
fn read(
    what: &str,
    reply: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
) -> Result<(u16, String), ChainError> {
    let mut r = reply.map_err(|e| err(format!("{what}: {e}")))?;
    let status = r.status().as_u16();
    let body = r
        .body_mut()
        .with_config()
        .limit(MAX_REPLY)
        .read_to_string()
        .map_err(|e| err(format!("{what}: {e}")))?;
    Ok((status, body))
}

/// An Esplora REST server (`https://blockstream.info/api`,
/// `https://mempool.space/testnet4/api`, a local `electrs`).
pub struct EsploraChain {
    base: String,
    agent: ureq::Agent,
}

impl EsploraChain {
    /// A source at `base` (the API prefix, without a trailing `/`).
    pub fn new(base: &str) -> EsploraChain {
        EsploraChain {
            base: base.trim_end_matches('/').to_string(),
            agent: agent(),
        }
    }

    /// `GET path`: status and body.
    fn get(&self, path: &str) -> Result<(u16, String), ChainError> {
        let url = format!("{}{path}", self.base);
        read(&format!("GET {url}"), self.agent.get(&url).call())
    }

    fn post(&self, path: &str, content_type: &str, body: &[u8]) -> Result<String, ChainError> {
        let url = format!("{}{path}", self.base);
        let what = format!("POST {url}");
        let sent = self
            .agent
            .post(&url)
            .header("Content-Type", content_type)
            .send(body);
        match read(&what, sent)? {
            (200, text) => Ok(text),
            (status, text) => Err(err(format!("{what}: {status}: {text:.300}"))),
        }
    }

    fn json(&self, path: &str) -> Result<Option<Value>, ChainError> {
        match self.get(path)? {
            (200, body) => serde_json::from_str(&body)
                .map(Some)
                .map_err(|e| err(format!("GET {path}: not JSON: {e}"))),
            (404, _) => Ok(None),
            (status, body) => Err(err(format!("GET {path}: {status}: {body:.300}"))),
        }
    }
}

impl ChainSource for EsploraChain {
    fn tip_height(&self) -> Result<u32, ChainError> {
        match self.get("/blocks/tip/height")? {
            (200, body) => body
                .trim()
                .parse()
                .map_err(|_| err(format!("tip height {body:.40?} is not a number"))),
            (status, body) => Err(err(format!("tip height: {status}: {body:.300}"))),
        }
    }

    fn confirmations(&self, txid: &Txid) -> Result<Option<u32>, ChainError> {
        let Some(status) = self.json(&format!("/tx/{txid}/status"))? else {
            return Ok(None);
        };
        match status["confirmed"].as_bool() {
            Some(false) => Ok(Some(0)),
            Some(true) => {
                let height = status["block_height"]
                    .as_u64()
                    .and_then(|h| u32::try_from(h).ok())
                    .ok_or_else(|| err("a confirmed status without block_height"))?;
                let tip = self.tip_height()?;
                // A tip read after the status can only be higher.
                Ok(Some(tip.saturating_sub(height) + 1))
            }
            None => Err(err(format!("tx status without confirmed: {status}"))),
        }
    }

    fn is_unspent(&self, outpoint: &OutPoint) -> Result<bool, ChainError> {
        // The transaction must exist (an outspend of an unknown txid is not
        // "unspent").
        if self
            .json(&format!("/tx/{}/status", outpoint.txid))?
            .is_none()
        {
            return Ok(false);
        }
        let spend = self
            .json(&format!("/tx/{}/outspend/{}", outpoint.txid, outpoint.vout))?
            .ok_or_else(|| err("outspend: not found"))?;
        match spend["spent"].as_bool() {
            Some(spent) => Ok(!spent),
            None => Err(err(format!("outspend without spent: {spend}"))),
        }
    }

    fn broadcast(&self, package: &[Transaction]) -> Result<(), ChainError> {
        match package {
            [] => Ok(()),
            [tx] => self
                .post("/tx", "text/plain", hex::encode(serialize(tx)).as_bytes())
                .map(|_| ()),
            txs => {
                let hexes: Vec<String> = txs.iter().map(|t| hex::encode(serialize(t))).collect();
                self.post(
                    "/txs/package",
                    "application/json",
                    json!(hexes).to_string().as_bytes(),
                )
                .map(|_| ())
            }
        }
    }
}

/// Bitcoin Core over JSON-RPC (`http://user:password@127.0.0.1:8332`).
/// Transactions that are not the wallet's need `-txindex` (or to be in
/// the mempool) for `getrawtransaction`.
pub struct BitcoindChain {
    url: String,
    auth: Option<String>,
    agent: ureq::Agent,
}

impl BitcoindChain {
    /// A source at `url`; credentials in the URL's userinfo become HTTP
    /// basic authentication.
    pub fn new(url: &str) -> Result<BitcoindChain, ChainError> {
        use base64::Engine as _;
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| err(format!("{url:?} is not a URL")))?;
        let (auth, host) = match rest.rsplit_once('@') {
            Some((userinfo, host)) => (
                Some(format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(userinfo)
                )),
                host,
            ),
            None => (None, rest),
        };
        Ok(BitcoindChain {
            url: format!("{scheme}://{host}"),
            auth,
            agent: agent(),
        })
    }

    /// One call: its `result`, or the RPC error (code, message).
    fn call(
        &self,
        method: &str,
        params: Value,
    ) -> Result<Result<Value, (i64, String)>, ChainError> {
        let body = json!({"jsonrpc": "1.0", "id": "lk", "method": method, "params": params});
        let mut req = self
            .agent
            .post(&self.url)
            .header("Content-Type", "application/json");
        if let Some(auth) = &self.auth {
            req = req.header("Authorization", auth);
        }
        let (status, text) = read(method, req.send(body.to_string().as_bytes()))?;
        if status == 401 || status == 403 {
            return Err(err(format!(
                "{method}: {status}: check the RPC credentials"
            )));
        }
        let reply: Value = serde_json::from_str(&text)
            .map_err(|e| err(format!("{method}: {status}: not JSON ({e}): {text:.200}")))?;
        if !reply["error"].is_null() {
            let code = reply["error"]["code"].as_i64().unwrap_or(0);
            let message = reply["error"]["message"].as_str().unwrap_or("").to_string();
            return Ok(Err((code, message)));
        }
        match reply.get("result") {
            Some(result) => Ok(Ok(result.clone())),
            None => Err(err(format!("{method}: a reply without result"))),
        }
    }

    fn must(&self, method: &str, params: Value) -> Result<Value, ChainError> {
        self.call(method, params)?
            .map_err(|(code, message)| err(format!("{method}: error {code}: {message}")))
    }
}

/// Core's "no such transaction" (`RPC_INVALID_ADDRESS_OR_KEY`).
const RPC_NOT_FOUND: i64 = -5;

impl ChainSource for BitcoindChain {
    fn tip_height(&self) -> Result<u32, ChainError> {
        let n = self.must("getblockcount", json!([]))?;
        n.as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| err(format!("getblockcount: {n}")))
    }

    fn confirmations(&self, txid: &Txid) -> Result<Option<u32>, ChainError> {
        match self.call("getrawtransaction", json!([txid.to_string(), true]))? {
            Ok(tx) if !tx.is_object() => Err(err(format!("getrawtransaction: {tx:.200}"))),
            Ok(tx) => match tx.get("confirmations") {
                // In the mempool: no field.
                None => Ok(Some(0)),
                Some(c) => c
                    .as_u64()
                    .and_then(|c| u32::try_from(c).ok())
                    .map(Some)
                    .ok_or_else(|| err(format!("confirmations: {c}"))),
            },
            Err((RPC_NOT_FOUND, _)) => Ok(None),
            Err((code, message)) => Err(err(format!("getrawtransaction: error {code}: {message}"))),
        }
    }

    fn is_unspent(&self, outpoint: &OutPoint) -> Result<bool, ChainError> {
        // `gettxout` answers null for a spent or unknown output; the
        // mempool counts (a spend waiting to confirm is a spend).
        let out = self.must(
            "gettxout",
            json!([outpoint.txid.to_string(), outpoint.vout, true]),
        )?;
        match out {
            Value::Null => Ok(false),
            Value::Object(_) => Ok(true),
            other => Err(err(format!("gettxout: {other}"))),
        }
    }

    fn broadcast(&self, package: &[Transaction]) -> Result<(), ChainError> {
        match package {
            [] => Ok(()),
            [tx] => self
                .must("sendrawtransaction", json!([hex::encode(serialize(tx))]))
                .map(|_| ()),
            txs => {
                let hexes: Vec<String> = txs.iter().map(|t| hex::encode(serialize(t))).collect();
                let r = self.must("submitpackage", json!([hexes]))?;
                match r["package_msg"].as_str() {
                    Some("success") | None => Ok(()),
                    Some(msg) => Err(err(format!("submitpackage: {msg}: {r}"))),
                }
            }
        }
    }
}
