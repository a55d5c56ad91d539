//! keyserver.md §5 against a real `keyserverd`, tried as a client that
//! does not want to pay would: a paid call cannot skip its token, forge
//! one, bring one from another keyserver, or spend one twice; a refused
//! call spends nothing, a retried committed call is not charged again; a
//! key rotation keeps bought tokens redeemable; and the wallet drops only
//! the token the server names as spent.

mod support;

use ed25519_dalek::SigningKey;
use ks_client::{Client, ClientError};
use ks_core::author::{self, UidKeys};
use ks_core::b64;
use ks_core::entry::Entry;
use ks_core::uid::UidMessage;
use serde_json::{json, Value};
use support::{call, code, mint_tokens, msg_json, now, operator, x25519, Keyserverd};

fn create(head: &Entry, name: &str, seed: u8) -> UidMessage {
    let key = SigningKey::from_bytes(&[seed; 32]);
    let keys = UidKeys {
        sig_key: &key,
        escrow: None,
        static_key: x25519(seed),
    };
    author::sign_create(
        author::content(name, &keys, 0, Some(head), "strict", now()),
        &keys,
    )
}

fn create_call(url: &str, m: &UidMessage, token: Option<&str>) -> Value {
    let mut params = json!({"UIDMessage": msg_json(m)});
    if let Some(t) = token {
        params["Token"] = Value::String(t.to_string());
    }
    call(url, "KeyRepository.CreateUID", params)
}

#[test]
fn paid_calls_cannot_skip_forge_import_or_reuse_tokens() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Keyserverd::start(dir.path(), 0, &["--no-rate-limits"]);
    let url = server.url.clone();
    let mut client = Client::new(&url, server.pin.clone());
    client.sync().expect("sync");
    let head = *client.entry(client.size() - 1).expect("head");
    let tokens = mint_tokens(dir.path(), 4);
    let bob = create(&head, "bob@localhost", 1);

    // No token, a token of the wrong JSON type, garbage.
    let v = create_call(&url, &bob, None);
    assert_eq!(
        (code(&v), &v["error"]["data"]["reason"]),
        (-32001, &json!("payment_required"))
    );
    let v = call(
        &url,
        "KeyRepository.CreateUID",
        json!({"UIDMessage": msg_json(&bob), "Token": 7}),
    );
    assert_eq!(code(&v), -32602, "{v}");
    let v = create_call(&url, &bob, Some("AAAA"));
    assert_eq!(code(&v), -32002, "{v}");
    // A real token whose authenticator was altered (a forgery).
    let mut forged = b64::decode(&tokens[0]).expect("b64");
    let last = forged.len() - 1;
    forged[last] ^= 1;
    let v = create_call(&url, &bob, Some(&b64::encode(&forged)));
    assert_eq!(code(&v), -32002, "{v}");
    // A valid token of another keyserver (its own issuer key) for the same
    // domain.
    let other = tempfile::tempdir().expect("tempdir");
    let foreign = mint_tokens(other.path(), 1);
    let v = create_call(&url, &bob, Some(&foreign[0]));
    assert_eq!(code(&v), -32002, "{v}");
    // A token made for another deployment's challenge, under this issuer.
    let elsewhere = {
        let secret = keyserverd::tokens::load_or_create_issuer(dir.path()).expect("key");
        let digest = ks_core::token::challenge_digest("localhost", "elsewhere/kt/v1");
        keyserverd::tokens::mint(&secret, &digest, 1).expect("mint")
    };
    let v = create_call(&url, &bob, Some(&elsewhere[0]));
    assert_eq!(code(&v), -32002, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("challenge"),
        "{v}"
    );

    // The real thing; then the same token for someone else is spent, and
    // nothing of that call reaches the chain.
    let v = create_call(&url, &bob, Some(&tokens[0]));
    let bob_pos = v["result"]["UIDMessageReply"]["ENTRY"]["HASHCHAINPOS"].clone();
    assert!(bob_pos.is_u64(), "{v}");
    let carol = create(&head, "carol@localhost", 2);
    let v = create_call(&url, &carol, Some(&tokens[0]));
    assert_eq!(
        (code(&v), &v["error"]["data"]["index"]),
        (-32003, &json!(0))
    );
    // Bob's retry with his token gets his reply, not token_spent.
    let v = create_call(&url, &bob, Some(&tokens[0]));
    assert_eq!(
        v["result"]["UIDMessageReply"]["ENTRY"]["HASHCHAINPOS"], bob_pos,
        "{v}"
    );
    // A call refused for another reason spends nothing: the token then
    // pays for Carol.
    let reserved = create(&head, "root@localhost", 3);
    let v = create_call(&url, &reserved, Some(&tokens[1]));
    assert_eq!(code(&v), -32012, "{v}");
    let taken = create(&head, "bob@localhost", 4);
    let v = create_call(&url, &taken, Some(&tokens[1]));
    assert_eq!(code(&v), -32010, "{v}");
    let v = create_call(&url, &carol, Some(&tokens[1]));
    assert!(v["result"].is_object(), "the unspent token pays: {v}");

    // AddKeyInit is all or nothing: a spent token at index 1 refuses the
    // call, names the token, and leaves the fresh one at index 0 unspent.
    let bob_key = SigningKey::from_bytes(&[1; 32]);
    let key_init = |n: u64| {
        let ki = author::key_init(
            &bob_key,
            "localhost",
            &author::anchor(&x25519(50 + n as u8), "mix.localhost", "bnltYWRkcmVzcw=="),
            &[n as u8; 16],
            n,
            false,
            now() - 60,
            now() + 86_400,
        );
        serde_json::from_slice::<Value>(&ks_core::lcj::Lcj::to_lcj(&ki)).expect("json")
    };
    let add = |kis: Vec<Value>, toks: Vec<&str>| {
        call(
            &url,
            "KeyInitRepository.AddKeyInit",
            json!({
                "SigPubKey": b64::encode(bob_key.verifying_key().as_bytes()),
                "KeyInits": kis,
                "Tokens": toks,
            }),
        )
    };
    let v = add(vec![key_init(1), key_init(2)], vec![&tokens[2]]);
    assert_eq!(code(&v), -32001, "one token short: {v}");
    let v = add(vec![key_init(1), key_init(2)], vec![&tokens[2], &tokens[2]]);
    assert_eq!(
        (code(&v), &v["error"]["data"]["index"]),
        (-32003, &json!(1))
    );
    let v = add(vec![key_init(1), key_init(2)], vec![&tokens[2], &tokens[0]]);
    assert_eq!(
        (code(&v), &v["error"]["data"]["index"]),
        (-32003, &json!(1))
    );
    let v = add(vec![key_init(1), key_init(2)], vec![&tokens[2], &tokens[3]]);
    assert_eq!(
        v["result"]["Signatures"].as_array().map(Vec::len),
        Some(2),
        "{v}"
    );
    // The retry of the committed call returns its receipts, uncharged.
    let again = add(vec![key_init(1), key_init(2)], vec![&tokens[2], &tokens[3]]);
    assert_eq!(again["result"], v["result"], "{again}");

    // Through ks-client's wallet: spent tokens are dropped one by one as
    // the server names them; a call refused for another reason keeps the
    // tokens it carried; a successful one spends exactly its price.
    let mut alice = Client::new(&url, server.pin.clone());
    alice.sync().expect("sync");
    let spent = json!({"Tokens": [tokens[0].clone(), tokens[1].clone()]});
    assert_eq!(alice.finalize_tokens(&spent).expect("finalize"), 2);
    match alice.register("alice@localhost", "strict") {
        Err(ClientError::PaymentRequired { needed: 1, have: 0 }) => {}
        other => panic!("only spent tokens: {:?}", other.map(|o| o.identity)),
    }
    let fresh = mint_tokens(dir.path(), 2);
    alice
        .finalize_tokens(&json!({ "Tokens": fresh }))
        .expect("finalize");
    let mut stranger = alice.register("alice@localhost", "strict").expect("alice");
    assert_eq!(alice.token_balance(), 1, "one token paid");
    // Publishing under a SIGKEY the server does not know is refused
    // (-32011) and costs nothing.
    stranger.sig_key = SigningKey::from_bytes(&[77; 32]);
    match alice.publish_key_inits(&mut stranger, 1, 0, "mix.localhost", "bnltYWRkcmVzcw==") {
        Err(ClientError::Rpc { code: -32011, .. }) => {}
        other => panic!("unknown SIGKEY: {other:?}"),
    }
    assert_eq!(alice.token_balance(), 1, "the refused call kept its token");
    drop(server);
}

#[test]
fn a_rotated_issuer_key_keeps_bought_tokens_redeemable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Keyserverd::start(dir.path(), 0, &["--no-rate-limits"]);
    let url = server.url.clone();
    let pin = server.pin.clone();
    let mut before = Client::new(&url, pin.clone());
    before.sync().expect("sync");
    let old_caps = before.capabilities().expect("caps").capabilities;
    assert_eq!(old_caps.tkn_accepted.len(), 1);
    let old = mint_tokens(dir.path(), 2);
    let head = *before.entry(before.size() - 1).expect("head");
    let port = server.port();
    server.kill();

    operator(dir.path(), &["rotate"]);
    let server = Keyserverd::start(dir.path(), port, &["--no-rate-limits"]);
    let mut after = Client::new(&url, pin);
    after.sync().expect("sync");
    let caps = after.capabilities().expect("caps").capabilities;
    assert_ne!(caps.tkn_pub_key, old_caps.tkn_pub_key, "a new issuer key");
    assert_eq!(caps.tkn_accepted.len(), 2, "the old key is still accepted");
    assert!(caps.tkn_accepted.contains(&old_caps.tkn_accepted[0]));
    // A token bought before the rotation pays; a new one too.
    let v = create_call(&url, &create(&head, "dave@localhost", 9), Some(&old[0]));
    assert!(v["result"].is_object(), "{v}");
    let new = mint_tokens(dir.path(), 1);
    let v = create_call(&url, &create(&head, "erin@localhost", 10), Some(&new[0]));
    assert!(v["result"].is_object(), "{v}");
    // A spent token stays spent across the restart.
    let v = create_call(&url, &create(&head, "frank@localhost", 11), Some(&old[0]));
    assert_eq!(code(&v), -32003, "{v}");
    drop(server);
}

/// keyserver.md §2.3: a payment front end gets tokens issued over the
/// admin listener, with the bearer token of the 0600 `admin_token` file;
/// anyone else gets 401, and a server with tokens disabled issues none.
#[test]
fn the_admin_listener_issues_only_to_its_bearer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Keyserverd::start(dir.path(), 0, &["--no-rate-limits"]);
    let admin = server.process.admin_url.clone().expect("an admin listener");
    let token_file = dir.path().join("admin_token");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&token_file)
        .expect("admin_token")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let bearer = std::fs::read_to_string(&token_file)
        .expect("read")
        .trim()
        .to_string();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let post = |auth: Option<&str>, body: &[u8]| {
        let mut req = agent
            .post(format!("{admin}admin/tokens/issue"))
            .header("Content-Type", "application/json");
        if let Some(a) = auth {
            req = req.header("Authorization", a);
        }
        let mut r = req.send(body).expect("post");
        let status = r.status().as_u16();
        (status, r.body_mut().read_to_string().unwrap_or_default())
    };

    let mut alice = Client::new(&server.url, server.pin.clone());
    alice.sync().expect("sync");
    let requests = alice.request_tokens(3).expect("request");
    let body = json!({ "TokenRequests": requests.requests }).to_string();
    assert_eq!(post(None, body.as_bytes()).0, 401);
    assert_eq!(post(Some("Bearer wrong"), body.as_bytes()).0, 401);
    let almost = format!("Bearer {}x", &bearer[..bearer.len() - 1]);
    assert_eq!(post(Some(&almost), body.as_bytes()).0, 401);
    let auth = format!("Bearer {bearer}");
    assert_eq!(post(Some(&auth), b"not json").0, 400);
    assert_eq!(post(Some(&auth), br#"{"TokenRequests":["AAAA"]}"#).0, 400);
    let too_many = json!({ "TokenRequests": vec!["AAAA"; 4097] }).to_string();
    assert_eq!(post(Some(&auth), too_many.as_bytes()).0, 413);
    let (status, text) = post(Some(&auth), body.as_bytes());
    assert_eq!(status, 200, "{text}");
    let answer: Value = serde_json::from_str(&text).expect("json");
    // The wallet pairs the answer with its newest request batch.
    assert_eq!(alice.finalize_tokens(&answer).expect("finalize"), 3);
    alice.register("alice@localhost", "strict").expect("paid");

    let stats = agent
        .get(format!("{admin}admin/stats"))
        .header("Authorization", &auth)
        .call()
        .expect("stats")
        .body_mut()
        .read_to_string()
        .expect("body");
    let stats: Value = serde_json::from_str(&stats).expect("json");
    assert_eq!(stats["tokens_issued_since_start"], 3, "{stats}");
    assert_eq!(stats["spent_tokens"], 1, "{stats}");
    let unauth = agent
        .get(format!("{admin}admin/stats"))
        .call()
        .expect("stats");
    assert_eq!(unauth.status().as_u16(), 401);
    drop(server);

    let free = tempfile::tempdir().expect("tempdir");
    let server = Keyserverd::start(free.path(), 0, &["--tokens", "disabled"]);
    let admin = server.process.admin_url.clone().expect("an admin listener");
    let bearer = std::fs::read_to_string(free.path().join("admin_token")).expect("read");
    let mut r = agent
        .post(format!("{admin}admin/tokens/issue"))
        .header("Authorization", &format!("Bearer {}", bearer.trim()))
        .send(body.as_bytes())
        .expect("post");
    assert_eq!(
        r.status().as_u16(),
        409,
        "{:?}",
        r.body_mut().read_to_string()
    );
}

/// docs/keyserver.md: no token is lost to a network error. A paid call that
/// never reaches the server keeps its tokens in the wallet; once the server
/// is back, the same tokens pay.
#[test]
fn a_call_that_fails_in_transit_keeps_its_tokens() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Keyserverd::start(dir.path(), 0, &["--no-rate-limits"]);
    let (url, port) = (server.url.clone(), server.port());
    let mut alice = Client::new(&url, server.pin.clone());
    alice.sync().expect("sync");
    let minted = mint_tokens(dir.path(), 3);
    alice
        .finalize_tokens(&json!({ "Tokens": minted }))
        .expect("finalize");
    let mut me = alice.register("alice@localhost", "strict").expect("alice");
    assert_eq!(alice.token_balance(), 2);
    server.kill();
    // AddKeyInit goes straight to the paid call (Capabilities are cached).
    match alice.publish_key_inits(&mut me, 2, 0, "mix.localhost", "bnltYWRkcmVzcw==") {
        Err(ClientError::Transport(_)) => {}
        other => panic!("no server: {other:?}"),
    }
    assert_eq!(alice.token_balance(), 2, "the tokens stay in the wallet");
    let _server = Keyserverd::start(dir.path(), port, &["--no-rate-limits"]);
    alice
        .publish_key_inits(&mut me, 2, 0, "mix.localhost", "bnltYWRkcmVzcw==")
        .expect("paid with the same tokens");
    assert_eq!(alice.token_balance(), 0);
}
