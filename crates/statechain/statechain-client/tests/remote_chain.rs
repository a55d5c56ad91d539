//! The Esplora and bitcoind chain sources against in-process servers that
//! implement the documented subset of each API (neither a node nor an
//! Esplora can run on the test machine; statechain.md §4.6). Each server
//! holds one small chain: a confirmed funding transaction whose output 0
//! is unspent and output 1 spent, one transaction in the mempool, and a
//! tip. The sources must read it exactly, treat unknown transactions as
//! unknown, broadcast single transactions and packages the way each API
//! takes them, and turn malformed replies into errors.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use bitcoin::absolute::LockTime;
use bitcoin::consensus::encode::serialize;
use bitcoin::transaction::Version;
use bitcoin::{Amount, OutPoint, ScriptBuf, Sequence, Transaction, TxIn, TxOut, Txid, Witness};
use serde_json::{json, Value};
use statechain_client::chain::ChainSource;
use statechain_client::remote::{BitcoindChain, EsploraChain};

fn tx(tag: u8) -> Transaction {
    Transaction {
        version: Version::non_standard(3),
        lock_time: LockTime::ZERO,
        input: vec![TxIn {
            previous_output: OutPoint::null(),
            script_sig: ScriptBuf::from_bytes(vec![tag]),
            sequence: Sequence::MAX,
            witness: Witness::new(),
        }],
        output: vec![TxOut {
            value: Amount::from_sat(1000),
            script_pubkey: ScriptBuf::new(),
        }],
    }
}

/// One request: method, path, headers (lowercase names), body.
struct Request {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

/// Serves `handle` on a loopback port, one request per connection.
fn serve(handle: impl Fn(&Request) -> (u16, String) + Send + 'static) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            let mut parts = line.split_whitespace();
            let (method, path) = (
                parts.next().unwrap_or("").to_string(),
                parts.next().unwrap_or("").to_string(),
            );
            let mut headers = Vec::new();
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
                    break;
                }
                if let Some((k, v)) = h.split_once(':') {
                    headers.push((k.trim().to_lowercase(), v.trim().to_string()));
                }
            }
            let len = headers
                .iter()
                .find(|(k, _)| k == "content-length")
                .and_then(|(_, v)| v.parse().ok())
                .unwrap_or(0usize);
            let mut body = vec![0u8; len];
            if reader.read_exact(&mut body).is_err() {
                continue;
            }
            let (status, reply) = handle(&Request {
                method,
                path,
                headers,
                body,
            });
            let _ = write!(
                stream,
                "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reply}",
                reply.len()
            );
        }
    });
    format!("http://{addr}")
}

/// What the server was sent to broadcast: (path or method, body).
type Posted = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

struct World {
    funding: Txid,
    mempool: Txid,
    unknown: Txid,
    posted: Posted,
}

fn world() -> World {
    World {
        funding: tx(1).compute_txid(),
        mempool: tx(2).compute_txid(),
        unknown: tx(3).compute_txid(),
        posted: Arc::new(Mutex::new(Vec::new())),
    }
}

/// The chain: tip 110; `funding` at height 101 (10 confirmations), output
/// 0 unspent and 1 spent; `mempool` unconfirmed.
fn esplora(w: &World, malformed: bool) -> String {
    let (funding, mempool, posted) = (w.funding, w.mempool, w.posted.clone());
    serve(move |r| {
        if malformed {
            return (200, "{\"confirmed\": \"yes\", \"spent\": 3}".into());
        }
        match (r.method.as_str(), r.path.as_str()) {
            ("GET", "/api/blocks/tip/height") => (200, "110".into()),
            ("GET", p) if p == format!("/api/tx/{funding}/status") => (
                200,
                json!({"confirmed": true, "block_height": 101, "block_hash": "00"}).to_string(),
            ),
            ("GET", p) if p == format!("/api/tx/{mempool}/status") => {
                (200, json!({"confirmed": false}).to_string())
            }
            ("GET", p) if p == format!("/api/tx/{funding}/outspend/0") => {
                (200, json!({"spent": false}).to_string())
            }
            ("GET", p) if p == format!("/api/tx/{funding}/outspend/1") => (
                200,
                json!({"spent": true, "txid": mempool.to_string(), "vin": 0}).to_string(),
            ),
            ("POST", "/api/tx") | ("POST", "/api/txs/package") => {
                posted
                    .lock()
                    .expect("lock")
                    .push((r.path.clone(), r.body.clone()));
                (200, "ok".into())
            }
            _ => (404, "Transaction not found".into()),
        }
    })
}

#[test]
fn esplora_reads_the_chain_and_broadcasts_packages() {
    let w = world();
    let url = esplora(&w, false);
    let chain = EsploraChain::new(&format!("{url}/api/"));
    assert_eq!(chain.tip_height().expect("tip"), 110);
    assert_eq!(chain.confirmations(&w.funding).expect("conf"), Some(10));
    assert_eq!(chain.confirmations(&w.mempool).expect("conf"), Some(0));
    assert_eq!(chain.confirmations(&w.unknown).expect("conf"), None);
    assert!(chain.is_unspent(&OutPoint::new(w.funding, 0)).expect("0"));
    assert!(!chain.is_unspent(&OutPoint::new(w.funding, 1)).expect("1"));
    assert!(!chain
        .is_unspent(&OutPoint::new(w.unknown, 0))
        .expect("unknown"));

    let (parent, child) = (tx(4), tx(5));
    chain.broadcast(std::slice::from_ref(&parent)).expect("one");
    chain
        .broadcast(&[parent.clone(), child.clone()])
        .expect("package");
    let posted = w.posted.lock().expect("lock").clone();
    assert_eq!(posted.len(), 2);
    assert_eq!(posted[0].0, "/api/tx");
    assert_eq!(posted[0].1, hex::encode(serialize(&parent)).into_bytes());
    assert_eq!(posted[1].0, "/api/txs/package");
    let package: Value = serde_json::from_slice(&posted[1].1).expect("json array");
    assert_eq!(
        package,
        json!([
            hex::encode(serialize(&parent)),
            hex::encode(serialize(&child))
        ])
    );

    // Malformed replies are errors, not answers.
    let bad = EsploraChain::new(&format!("{}/api", esplora(&w, true)));
    assert!(bad.tip_height().is_err());
    assert!(bad.confirmations(&w.funding).is_err());
    assert!(bad.is_unspent(&OutPoint::new(w.funding, 0)).is_err());
}

/// The same chain as Core's JSON-RPC answers it; only `user:secret` may call.
fn bitcoind(w: &World, malformed: bool) -> String {
    use base64::Engine as _;
    let (funding, mempool, posted) = (w.funding, w.mempool, w.posted.clone());
    let auth = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("user:secret")
    );
    serve(move |r| {
        if !r
            .headers
            .iter()
            .any(|(k, v)| k == "authorization" && *v == auth)
        {
            return (401, String::new());
        }
        if malformed {
            return (
                200,
                json!({"result": "many", "error": null, "id": "lk"}).to_string(),
            );
        }
        let call: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
        let params = &call["params"];
        let ok = |v: Value| {
            (
                200,
                json!({"result": v, "error": null, "id": "lk"}).to_string(),
            )
        };
        let fail = |code: i64, m: &str| {
            (
                500,
                json!({"result": null, "error": {"code": code, "message": m}, "id": "lk"})
                    .to_string(),
            )
        };
        match call["method"].as_str().unwrap_or("") {
            "getblockcount" => ok(json!(110)),
            "getrawtransaction" => {
                let id = params[0].as_str().unwrap_or("");
                if id == funding.to_string() {
                    ok(json!({"txid": id, "confirmations": 10}))
                } else if id == mempool.to_string() {
                    ok(json!({"txid": id}))
                } else {
                    fail(-5, "No such mempool or blockchain transaction")
                }
            }
            "gettxout" => {
                let (id, vout) = (params[0].as_str().unwrap_or(""), params[1].as_u64());
                if id == funding.to_string() && vout == Some(0) {
                    ok(json!({"value": 0.00001, "confirmations": 10}))
                } else {
                    ok(Value::Null)
                }
            }
            "sendrawtransaction" | "submitpackage" => {
                posted
                    .lock()
                    .expect("lock")
                    .push((call["method"].as_str().unwrap_or("").into(), r.body.clone()));
                if call["method"] == "submitpackage" {
                    ok(json!({"package_msg": "success", "tx-results": {}}))
                } else {
                    ok(json!("00"))
                }
            }
            _ => fail(-32601, "Method not found"),
        }
    })
}

#[test]
fn bitcoind_reads_the_chain_and_broadcasts_packages() {
    let w = world();
    let url = bitcoind(&w, false);
    let chain = BitcoindChain::new(&url.replace("http://", "http://user:secret@")).expect("url");
    assert_eq!(chain.tip_height().expect("tip"), 110);
    assert_eq!(chain.confirmations(&w.funding).expect("conf"), Some(10));
    assert_eq!(chain.confirmations(&w.mempool).expect("conf"), Some(0));
    assert_eq!(chain.confirmations(&w.unknown).expect("conf"), None);
    assert!(chain.is_unspent(&OutPoint::new(w.funding, 0)).expect("0"));
    assert!(!chain.is_unspent(&OutPoint::new(w.funding, 1)).expect("1"));
    assert!(!chain
        .is_unspent(&OutPoint::new(w.unknown, 0))
        .expect("unknown"));

    let (parent, child) = (tx(4), tx(5));
    chain.broadcast(std::slice::from_ref(&parent)).expect("one");
    chain
        .broadcast(&[parent.clone(), child.clone()])
        .expect("package");
    let posted = w.posted.lock().expect("lock").clone();
    let methods: Vec<&str> = posted.iter().map(|(m, _)| m.as_str()).collect();
    assert_eq!(methods, ["sendrawtransaction", "submitpackage"]);
    let call: Value = serde_json::from_slice(&posted[1].1).expect("json");
    assert_eq!(
        call["params"],
        json!([[
            hex::encode(serialize(&parent)),
            hex::encode(serialize(&child))
        ]])
    );

    // Wrong credentials and malformed replies are errors.
    let anonymous = BitcoindChain::new(&url).expect("url");
    let e = anonymous.tip_height().expect_err("401");
    assert!(e.0.contains("credentials"), "{e}");
    let bad = BitcoindChain::new(&bitcoind(&w, true).replace("http://", "http://user:secret@"))
        .expect("url");
    assert!(bad.tip_height().is_err());
    assert!(bad.confirmations(&w.funding).is_err());
    assert!(bad.is_unspent(&OutPoint::new(w.funding, 0)).is_err());
}
