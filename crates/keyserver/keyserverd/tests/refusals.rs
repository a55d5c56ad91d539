//! keyserver.md §10 "honest server" refusals and §2.1's HTTP rules, tried
//! against a real `keyserverd` the way a misbehaving client would: every
//! request is crafted by hand and must get its §2.1 code, and nothing it
//! tried may change what an honest client then verifies.

mod support;

use ed25519_dalek::SigningKey;
use ks_client::Client;
use ks_core::author::{self, Authority, UidKeys};
use ks_core::b64;
use ks_core::lcj::Lcj;
use ks_core::sig::{sign, Ctx};
use serde_json::{json, Value};
use support::{call, code, msg_json, now, post_raw, x25519, Keyserverd};

#[test]
fn the_honest_server_refuses_each_bad_request_with_its_code() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Keyserverd::start(dir.path(), 0, &["--no-rate-limits", "--tokens", "disabled"]);
    let url = server.url.clone();
    let mut client = Client::new(&url, server.pin.clone());
    client.sync().expect("sync");
    let head = *client.entry(client.size() - 1).expect("head");
    let create = |name: &str, sig: &SigningKey, escrow: Option<&SigningKey>| {
        let keys = UidKeys {
            sig_key: sig,
            escrow,
            static_key: x25519(1),
        };
        author::sign_create(
            author::content(name, &keys, 0, Some(&head), "strict", now()),
            &keys,
        )
    };

    // HTTP rules: 405, 415, 413 (before parsing), 204 for notifications.
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    assert_eq!(agent.get(&url).call().expect("get").status().as_u16(), 405);
    assert_eq!(post_raw(&url, "text/plain", b"{}").0, 415);
    assert_eq!(
        post_raw(&url, "application/json", &vec![b' '; 300 << 10]).0,
        413
    );
    let note = json!({"jsonrpc": "2.0", "method": "KeyRepository.Capabilities"});
    assert_eq!(
        post_raw(&url, "application/json", note.to_string().as_bytes()).0,
        204
    );
    // JSON-RPC envelope errors.
    for (body, want) in [
        (&b"{not json"[..], -32700),
        (br#"{"jsonrpc":"2.0","id":1,"id":2,"method":"KeyRepository.Capabilities"}"#, -32700),
        (br#"{"jsonrpc":"2.0","id":1.5,"method":"KeyRepository.Capabilities"}"#, -32700),
        (br#"[{"jsonrpc":"2.0","id":1,"method":"KeyRepository.Capabilities"}]"#, -32600),
        (br#"{"jsonrpc":"1.0","id":1,"method":"KeyRepository.Capabilities"}"#, -32600),
        (br#"{"jsonrpc":"2.0","id":1,"method":"KeyRepository.Nope"}"#, -32601),
        (br#"{"jsonrpc":"2.0","id":1,"method":"KeyRepository.LookupUID","params":{}}"#, -32601),
        (br#"{"jsonrpc":"2.0","id":1,"method":"KeyRepository.FetchUID","params":["x"]}"#, -32602),
        (br#"{"jsonrpc":"2.0","id":1,"method":"KeyRepository.FetchUID","params":{"UIDIndex":"AAE="}}"#, -32602),
        (br#"{"jsonrpc":"2.0","id":1,"method":"KeyRepository.FetchHashChain","params":{"StartPosition":5,"EndPosition":1}}"#, -32602),
        (br#"{"jsonrpc":"2.0","id":1,"method":"KeyRepository.FetchHashChain","params":{"StartPosition":999999}}"#, -32030),
        (br#"{"jsonrpc":"2.0","id":1,"method":"KeyRepository.Capabilities","params":{"Extra":1}}"#, -32602),
    ] {
        let (status, v) = post_raw(&url, "application/json", body);
        assert_eq!(status, 200);
        assert_eq!(code(&v), want, "{}: {v}", String::from_utf8_lossy(body));
        assert!(v["error"]["data"]["reason"].is_string(), "{v}");
    }
    let v = call(
        &url,
        "KeyRepository.FetchUID",
        json!({"UIDIndex": b64::encode(&[7; 32])}),
    );
    assert_eq!(code(&v), -32031);

    // Alice registers honestly (with escrow) through the client.
    let mut alice = client.register("alice@localhost", "strict").expect("alice");
    let escrow = alice.escrow.clone().expect("escrow");

    // Reserved localparts, unmapped names (a1ice maps to alice), other domains.
    let k = SigningKey::from_bytes(&[5; 32]);
    for (name, want) in [("root@localhost", -32012), ("keyserver@localhost", -32012)] {
        let v = call(
            &url,
            "KeyRepository.CreateUID",
            json!({"UIDMessage": msg_json(&create(name, &k, None))}),
        );
        assert_eq!(code(&v), want, "{name}: {v}");
    }
    let mut a1ice = create("alice@localhost", &k, None);
    a1ice.content.identity = "a1ice@localhost".into();
    let a1ice = author::sign_create(
        a1ice.content,
        &UidKeys {
            sig_key: &k,
            escrow: None,
            static_key: x25519(1),
        },
    );
    let v = call(
        &url,
        "KeyRepository.CreateUID",
        json!({"UIDMessage": msg_json(&a1ice)}),
    );
    assert_eq!(code(&v), -32602, "{v}");
    assert_eq!(v["error"]["data"]["field"], "UIDCONTENT.IDENTITY");
    // Re-registration of a live identity.
    let v = call(
        &url,
        "KeyRepository.CreateUID",
        json!({"UIDMessage": msg_json(&create("alice@localhost", &k, None))}),
    );
    assert_eq!(code(&v), -32010, "{v}");

    // Updates that break the rules.
    let next = |sig: &SigningKey, escrow_pub: Option<&SigningKey>, by: Authority<'_>| {
        let keys = UidKeys {
            sig_key: sig,
            escrow: escrow_pub,
            static_key: x25519(2),
        };
        let c = author::content("alice@localhost", &keys, 1, Some(&head), "strict", now());
        author::sign_update(c, sig, by)
    };
    let new = SigningKey::from_bytes(&[6; 32]);
    // Self-signed by a key that is not Alice's (what a takeover looks like).
    let v = call(
        &url,
        "KeyRepository.UpdateUID",
        json!({"UIDMessage": msg_json(&next(&new, Some(&escrow), Authority::User(&new)))}),
    );
    assert_eq!(code(&v), -32013, "{v}");
    // SIGESCROW changed under USERSIGNATURE (a thief with SIGKEY).
    let other_escrow = SigningKey::from_bytes(&[7; 32]);
    let v = call(
        &url,
        "KeyRepository.UpdateUID",
        json!({"UIDMessage": msg_json(&next(&new, Some(&other_escrow), Authority::User(&alice.sig_key)))}),
    );
    assert_eq!(code(&v), -32017, "{v}");
    // Both signatures.
    let mut both = next(&new, Some(&escrow), Authority::User(&alice.sig_key));
    both.escrow_signature = sign(&escrow, Ctx::UidContent, &both.content);
    let v = call(
        &url,
        "KeyRepository.UpdateUID",
        json!({"UIDMessage": msg_json(&both)}),
    );
    assert_eq!(code(&v), -32017, "{v}");
    // Wrong MSGCOUNT.
    let mut gap = next(&new, Some(&escrow), Authority::User(&alice.sig_key)).content;
    gap.msg_count = 3;
    let gap = author::sign_update(gap, &new, Authority::User(&alice.sig_key));
    let v = call(
        &url,
        "KeyRepository.UpdateUID",
        json!({"UIDMessage": msg_json(&gap)}),
    );
    assert_eq!(code(&v), -32014, "{v}");
    assert_eq!(v["error"]["data"]["expected"], 1);
    // Update of an unknown identity.
    let v = call(
        &url,
        "KeyRepository.UpdateUID",
        json!({"UIDMessage": msg_json(&{
            let keys = UidKeys { sig_key: &new, escrow: None, static_key: x25519(2) };
            let c = author::content("nobody@localhost", &keys, 1, Some(&head), "strict", now());
            author::sign_update(c, &new, Authority::User(&k))
        })}),
    );
    assert_eq!(code(&v), -32011, "{v}");
    // LASTENTRY that is not a chain entry.
    let mut stale = create("carol@localhost", &k, None).content;
    let mut fake = head;
    fake.0[40] ^= 1;
    stale.last_entry = b64::encode(&fake.0);
    let stale = author::sign_create(
        stale,
        &UidKeys {
            sig_key: &k,
            escrow: None,
            static_key: x25519(1),
        },
    );
    let v = call(
        &url,
        "KeyRepository.CreateUID",
        json!({"UIDMessage": msg_json(&stale)}),
    );
    assert_eq!(code(&v), -32015, "{v}");
    // No late escrow: an identity made without escrow cannot gain one.
    let dave_key = SigningKey::from_bytes(&[8; 32]);
    let dave = create("dave@localhost", &dave_key, None);
    let v = call(
        &url,
        "KeyRepository.CreateUID",
        json!({"UIDMessage": msg_json(&dave)}),
    );
    assert!(v["result"].is_object(), "{v}");
    let late = {
        let keys = UidKeys {
            sig_key: &dave_key,
            escrow: Some(&escrow),
            static_key: x25519(1),
        };
        let c = author::content("dave@localhost", &keys, 1, Some(&head), "strict", now());
        author::sign_update(c, &dave_key, Authority::User(&dave_key))
    };
    let v = call(
        &url,
        "KeyRepository.UpdateUID",
        json!({"UIDMessage": msg_json(&late)}),
    );
    assert_eq!(code(&v), -32017, "{v}");

    // Flush replays: as-is, to another origin, outside the window, with
    // another method. Alice's KeyInits survive each.
    client
        .publish_key_inits(&mut alice, 2, 0, "mix.localhost", "bnltYWRkcmVzcw==")
        .expect("publish");
    let origin = "localhost/kt/v1";
    let pubkey = b64::encode(alice.sig_key.verifying_key().as_bytes());
    let flush = |req: &ks_core::keyinit::FlushRequest, s: &str| {
        call(
            &url,
            "KeyInitRepository.FlushKeyInit",
            json!({
                "SigPubKey": pubkey,
                "Flush": serde_json::from_slice::<Value>(&req.to_lcj()).expect("json"),
                "Signature": s,
            }),
        )
    };
    let (elsewhere, s) = author::flush(&alice.sig_key, "other.example/kt/v1", &[1; 16], now());
    assert_eq!(code(&flush(&elsewhere, &s)), -32602);
    let (late, s) = author::flush(&alice.sig_key, origin, &[2; 16], now() - 301);
    assert_eq!(code(&flush(&late, &s)), -32016);
    let (mut method, _) = author::flush(&alice.sig_key, origin, &[3; 16], now());
    method.method = "KeyInitRepository.AddKeyInit".into();
    let s = sign(&alice.sig_key, Ctx::FlushRequest, &method);
    assert_eq!(code(&flush(&method, &s)), -32602);
    let mut bob = Client::new(&url, server.pin.clone());
    let served = bob
        .session_start("alice@localhost")
        .expect("a KeyInit survives the failed flushes");
    assert!(served.receipt.one_time);
    let (ok, s) = author::flush(&alice.sig_key, origin, &[4; 16], now());
    let first = flush(&ok, &s);
    assert_eq!(first["result"]["Receipt"]["FLUSHED"], 1, "{first}");
    // The same request again, as an eavesdropper would replay it.
    client
        .publish_key_inits(&mut alice, 1, 0, "mix.localhost", "bnltYWRkcmVzcw==")
        .expect("publish");
    assert_eq!(code(&flush(&ok, &s)), -32022);
    bob.session_start("alice@localhost")
        .expect("the replay deleted nothing");

    // After all of it, the chain still verifies for a fresh client and
    // Alice's UID is the one she registered.
    let mut fresh = Client::new(&url, server.pin.clone());
    fresh.sync().expect("sync");
    let found = fresh
        .lookup("alice@localhost")
        .expect("lookup")
        .expect("alice");
    assert_eq!(found.message, alice.uid, "{}", server.log());
}

/// §4.6 with the default limits, from one address: free registrations
/// (tokens disabled) are ten an hour, the eleventh is told how long to wait
/// and leaves nothing in the chain; FetchKeyInit bursts are bounded.
#[test]
fn the_default_rate_limits_hold() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Keyserverd::start(dir.path(), 0, &["--tokens", "disabled"]);
    let url = server.url.clone();
    let mut client = Client::new(&url, server.pin.clone());
    client.sync().expect("sync");
    let head = *client.entry(0).expect("genesis");
    let mut alice = client.register("alice@localhost", "strict").expect("alice");
    client
        .publish_key_inits(&mut alice, 20, 0, "mix.localhost", "bnltYWRkcmVzcw==")
        .expect("publish");
    let mut outcomes = Vec::new();
    for i in 0..10u8 {
        let key = SigningKey::from_bytes(&[40 + i; 32]);
        let keys = UidKeys {
            sig_key: &key,
            escrow: None,
            static_key: x25519(1),
        };
        let m = author::sign_create(
            author::content(
                &format!("eve{}@localhost", char::from(b'k' + i)),
                &keys,
                0,
                Some(&head),
                "strict",
                now(),
            ),
            &keys,
        );
        let v = call(
            &url,
            "KeyRepository.CreateUID",
            json!({"UIDMessage": msg_json(&m)}),
        );
        outcomes.push(v);
    }
    // Alice's was the first of the hour: nine more pass, the tenth here is
    // the eleventh.
    for v in &outcomes[..9] {
        assert!(v["result"].is_object(), "{v}");
    }
    let refused = &outcomes[9];
    assert_eq!(code(refused), -32040, "{refused}");
    assert!(
        refused["error"]["data"]["retry_after_s"]
            .as_u64()
            .expect("retry_after_s")
            > 60
    );
    let mut fresh = Client::new(&url, server.pin.clone());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while fresh.size() < 11 {
        assert!(
            std::time::Instant::now() < deadline,
            "the accepted ones were never published"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
        fresh.sync().expect("sync");
    }
    assert_eq!(
        fresh.size(),
        11,
        "genesis, Alice and nine: nothing of the refused one"
    );
    assert!(fresh.lookup("evet@localhost").expect("lookup").is_none());
    // FetchKeyInit: bursts of 10 per address, then -32040 with a wait.
    let hash = ks_core::keyinit::sig_key_hash(alice.sig_key.verifying_key().as_bytes());
    let codes: Vec<i64> = (0..12)
        .map(|_| {
            let v = call(
                &url,
                "KeyInitRepository.FetchKeyInit",
                json!({"SigKeyHash": hash}),
            );
            v["error"]["code"].as_i64().unwrap_or(0)
        })
        .collect();
    assert_eq!(&codes[..10], &[0; 10], "{codes:?}");
    assert_eq!(codes[10], -32040, "{codes:?}");
}
