//! statechain.md §9.6 against a real `statechaind`: hostile and malformed
//! input is a clear `400`/`413` that stores nothing; replays answer the
//! recorded reply with `LK-Replay: 1`; a consumed nonce never answers
//! another challenge; one open session per coin under 32 concurrent
//! requests; 64 coins sign in parallel; a partial signature is what the
//! math says it is.

mod support;

use serde_json::json;
use statechain_core::cosign;
use statechain_core::scalar::{point, Scalar, ORDER};
use support::{h, scalar, se_id, start, Http, Owner};

/// One table of bad requests: each must be refused with the status and
/// code given, and leave the coin exactly as it was.
#[test]
fn check_rejected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let se = start(dir.path(), &[]);
    let http = Http::new(&se.url);
    let owner = Owner::deposit(&http, se_id(&http), 3);
    // The coin's state without the parts the checkpointer moves on its own.
    let coin_state = |v: serde_json::Value| {
        let leaves: Vec<_> = v["entries"]
            .as_array()
            .expect("entries")
            .iter()
            .map(|e| e["leaf"].clone())
            .collect();
        json!([
            v["count"],
            v["head"],
            v["head_seq"],
            v["pending_transfer"],
            v["status"],
            leaves
        ])
    };
    let before = coin_state(owner.state(&http));
    let good = owner.sign_first_body([1; 32]);
    let with = |k: &str, v: serde_json::Value| {
        let mut b = good.clone();
        b[k] = v;
        b
    };
    let off_curve = format!("02{}", "00".repeat(32)); // x = 0 is not on the curve
    let n_hex = hex::encode(ORDER);
    let r_s = hex::encode(statechain_core::scalar::ser33(&scalar(9).public()));
    let second = json!({"statechain_id": hex::encode(owner.id), "head": hex::encode(owner.head), "server_nonce": r_s,
                        "commitment": hex::encode([1u8; 32]), "challenge": hex::encode([2u8; 32]), "auth": good["auth"].clone()});
    let with2 = |k: &str, v: serde_json::Value| {
        let mut b = second.clone();
        b[k] = v;
        b
    };
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        ("/v1/sign/first", b"not json".to_vec(), 400, "malformed"),
        ("/v1/sign/first", b"{}".to_vec(), 400, "malformed"),
        ("/v1/sign/first", b"[1,2,3]".to_vec(), 400, "malformed"),
        ("/v1/sign/first", with("extra", json!(1)).to_string().into_bytes(), 400, "unknown_field"),
        ("/v1/sign/first", with("challenge", json!("00")).to_string().into_bytes(), 400, "unknown_field"),
        ("/v1/sign/first", with("commitment", json!("AB".repeat(32))).to_string().into_bytes(), 400, "malformed"),
        ("/v1/sign/first", with("commitment", json!("ab".repeat(31))).to_string().into_bytes(), 400, "malformed"),
        ("/v1/sign/first", with("statechain_id", json!("zz")).to_string().into_bytes(), 400, "malformed"),
        ("/v1/sign/first", with("commitment", json!(5)).to_string().into_bytes(), 400, "malformed"),
        ("/v1/sign/second", with2("challenge", json!("00".repeat(32))).to_string().into_bytes(), 400, "invalid_scalar"),
        ("/v1/sign/second", with2("challenge", json!(n_hex)).to_string().into_bytes(), 400, "invalid_scalar"),
        ("/v1/sign/second", with2("server_nonce", json!(off_curve)).to_string().into_bytes(), 400, "invalid_point"),
        ("/v1/sign/second", with2("server_nonce", json!("04".repeat(33))).to_string().into_bytes(), 400, "invalid_point"),
        ("/v1/transfer/sender", with("receiver_auth_key", json!("00".repeat(32))).to_string().into_bytes(), 400, "unknown_field"),
        ("/v1/sign/first", vec![b'{'; 70 * 1024], 413, "too_large"),
        ("/v1/deposit/init", json!({"token_id": "00".repeat(16), "auth": {"key": "00".repeat(32), "sig": "00".repeat(64)}}).to_string().into_bytes(), 400, "invalid_point"),
        // A valid shape signed by another key, and a forged signature.
        ("/v1/sign/first", {
            let mut other = Owner { a: scalar(77), ..Owner { se_id: owner.se_id, a: scalar(1), o: scalar(1), id: owner.id, head: owner.head, server_key: None } };
            other.head = owner.head;
            other.sign_first_body([1; 32]).to_string().into_bytes()
        }, 401, "bad_auth"),
        ("/v1/sign/first", with("commitment", json!(hex::encode([2u8; 32]))).to_string().into_bytes(), 401, "bad_auth"),
        // A signed sign/second for a session that does not exist.
        ("/v1/sign/second", owner.sign_second_body(&scalar(9).public(), [1; 32], &scalar(2)).to_string().into_bytes(), 404, "no_session"),
    ];
    for (path, body, status, code) in &cases {
        let r = http.post_raw(path, body);
        assert_eq!(
            (r.status, r.body["error"]["code"].as_str()),
            (*status, Some(*code)),
            "{path} {}: {:?}",
            String::from_utf8_lossy(&body[..body.len().min(120)]),
            r.body
        );
        assert_eq!(r.body["error"]["retryable"], false);
    }
    // Unknown coin.
    let mut stranger = Owner {
        se_id: owner.se_id,
        a: scalar(5),
        o: scalar(6),
        id: [9; 16],
        head: [0; 32],
        server_key: None,
    };
    stranger.head = [0; 32];
    let r = http.post("/v1/sign/first", &stranger.sign_first_body([1; 32]));
    assert_eq!(
        (r.status, r.body["error"]["code"].as_str()),
        (404, Some("unknown_statechain"))
    );
    // Nothing changed, and the server still answers.
    assert_eq!(coin_state(owner.state(&http)), before);
    assert_eq!(http.get("/v1/info").status, 200);
    for path in [
        "/v1/statechain/zz",
        "/v1/entry/00",
        "/v1/tokens/xyz",
        "/v1/keylist?limit=abc",
        "/v1/keylist?bogus=1",
    ] {
        let r = http.get(path);
        assert_eq!(r.status, 400, "{path}: {:?}", r.body);
    }
    assert_eq!(
        http.get(&format!("/v1/statechain/{}", "00".repeat(16)))
            .status,
        404
    );
}

/// §9.4 and §9.6 replays: the same `sign/second` again is the same partial
/// signature with `LK-Replay: 1` and no new count; another challenge for the
/// consumed nonce is `nonce_consumed`; a stale head is `stale_state` with
/// the current head.
#[test]
fn replays_and_consumed_nonces() {
    let dir = tempfile::tempdir().expect("tempdir");
    let se = start(dir.path(), &[]);
    let http = Http::new(&se.url);
    let mut owner = Owner::deposit(&http, se_id(&http), 4);
    let com = [7u8; 32];
    let first = http.post("/v1/sign/first", &owner.sign_first_body(com));
    let again = http.post("/v1/sign/first", &owner.sign_first_body(com));
    assert_eq!(
        first.body["server_nonce"], again.body["server_nonce"],
        "same commitment, same nonce"
    );
    let r_s = point(&h::<33>(&first.body["server_nonce"])).expect("point");
    let c = scalar(0x42);
    let body = owner.sign_second_body(&r_s, com, &c);
    let one = http.post("/v1/sign/second", &body);
    assert_eq!(one.status, 200, "{:?}", one.body);
    assert!(!one.replay);
    let two = http.post("/v1/sign/second", &body);
    assert_eq!(two.status, 200);
    assert!(two.replay, "LK-Replay: 1");
    assert_eq!(one.body, two.body);
    assert_eq!(owner.state(&http)["count"], 1);
    // The partial signature is r_s + c·s: checkable against S and R_s.
    let s_s = Scalar::from_bytes(&h(&one.body["partial_sig"])).expect("scalar");
    assert!(cosign::partial_is_valid(
        &owner.server_key.expect("S"),
        &r_s,
        &c,
        &s_s
    ));
    // Another challenge for the same nonce, properly authorised at the new head.
    owner.head = h(&one.body["entry"]["leaf_hash"]);
    let other = http.post(
        "/v1/sign/second",
        &owner.sign_second_body(&r_s, com, &scalar(0x43)),
    );
    assert_eq!(
        (other.status, other.body["error"]["code"].as_str()),
        (409, Some("nonce_consumed")),
        "{:?}",
        other.body
    );
    // A request at an old head.
    let mut stale = Owner {
        head: [0x11; 32],
        ..owner
    };
    let r = http.post("/v1/sign/first", &stale.sign_first_body([8; 32]));
    assert_eq!(
        (r.status, r.body["error"]["code"].as_str()),
        (409, Some("stale_state"))
    );
    assert_eq!(r.body["error"]["head_seq"], 1);
    assert_eq!(r.body["error"]["head"], one.body["entry"]["leaf_hash"]);
    // The commitment is single-use.
    stale.head = h(&one.body["entry"]["leaf_hash"]);
    let r = http.post("/v1/sign/first", &stale.sign_first_body(com));
    assert_eq!(
        (r.status, r.body["error"]["code"].as_str()),
        (409, Some("commitment_reused"))
    );
    assert_eq!(stale.state(&http)["count"], 1);
}

/// 32 concurrent `sign/first` on one coin: one nonce, 31 `session_pending`;
/// 32 concurrent `sign/second` with different challenges: one signature;
/// 64 coins in parallel all sign.
#[test]
fn concurrency_one_session_per_coin() {
    let dir = tempfile::tempdir().expect("tempdir");
    let se = start(dir.path(), &[]);
    let http = std::sync::Arc::new(Http::new(&se.url));
    let id = se_id(&http);
    let owner = std::sync::Arc::new(Owner::deposit(&http, id, 5));
    let results: Vec<support::Resp> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..32u8)
            .map(|i| {
                let (http, owner) = (http.clone(), owner.clone());
                s.spawn(move || http.post("/v1/sign/first", &owner.sign_first_body([i + 1; 32])))
            })
            .collect();
        hs.into_iter().map(|h| h.join().expect("thread")).collect()
    });
    let ok: Vec<_> = results.iter().filter(|r| r.status == 200).collect();
    assert_eq!(ok.len(), 1, "exactly one session opens");
    assert!(results
        .iter()
        .filter(|r| r.status != 200)
        .all(|r| r.status == 409 && r.body["error"]["code"] == "session_pending"));
    let r_s = point(&h::<33>(&ok[0].body["server_nonce"])).expect("point");
    // Which commitment won: find it by asking again with each (same nonce back).
    let com = (0..32u8)
        .map(|i| [i + 1; 32])
        .find(|c| {
            http.post("/v1/sign/first", &owner.sign_first_body(*c))
                .status
                == 200
        })
        .expect("the winning commitment");
    let results: Vec<support::Resp> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..32u8)
            .map(|i| {
                let (http, owner) = (http.clone(), owner.clone());
                s.spawn(move || {
                    http.post(
                        "/v1/sign/second",
                        &owner.sign_second_body(&r_s, com, &scalar(0x50 + i)),
                    )
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().expect("thread")).collect()
    });
    assert_eq!(
        results.iter().filter(|r| r.status == 200).count(),
        1,
        "one signature"
    );
    assert!(results
        .iter()
        .filter(|r| r.status != 200)
        .all(|r| r.status == 409));
    assert_eq!(owner.state(&http)["count"], 1);

    // 64 coins in parallel.
    let owners: Vec<Owner> = (0..64u8)
        .map(|i| Owner::deposit(&http, id, 10 + i))
        .collect();
    let counts: Vec<u32> = std::thread::scope(|s| {
        let hs: Vec<_> = owners
            .into_iter()
            .enumerate()
            .map(|(i, mut o)| {
                let http = http.clone();
                s.spawn(move || o.sign(&http, [i as u8 + 1; 32], &scalar(0x30)).2)
            })
            .collect();
        hs.into_iter().map(|h| h.join().expect("thread")).collect()
    });
    assert!(counts.iter().all(|c| *c == 1));
}
